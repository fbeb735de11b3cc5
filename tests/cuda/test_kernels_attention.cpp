// The simple causal GQA attention kernels against the CPU backend's attention in float64.
#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

template <class T> void check_attention(ErrorLog& fwd_log, ErrorLog& bwd_log) {
  auto cpu = make_cpu_backend();
  uint64_t seed = 1400;
  struct C {
    int64_t b, t, h, kv, hd;
  };
  // One token; GQA groups of 2 and 3 and plain MHA; sequences past a block of 128 threads.
  for (const C c : {C{1, 1, 1, 1, 2}, C{2, 7, 4, 2, 16}, C{1, 33, 3, 1, 8}, C{2, 130, 2, 2, 24}}) {
    const int64_t qn = c.b * c.t * c.h * c.hd, kn = c.b * c.t * c.kv * c.hd;
    const Shape qs{c.b, c.t, c.h, c.hd}, ks{c.b, c.t, c.kv, c.hd};
    const Vec q = random<T>(qn, ++seed), k = random<T>(kn, ++seed), v = random<T>(kn, ++seed);
    const Vec dout = random<T>(qn, ++seed), dq0 = random<T>(qn, ++seed), dk0 = random<T>(kn, ++seed),
              dv0 = random<T>(kn, ++seed);
    Tensor tq = tensor(*cpu, qs, q), tk = tensor(*cpu, ks, k), tv = tensor(*cpu, ks, v);
    Tensor out = cpu->empty(qs, DType::F64), lse = cpu->empty({c.b, c.h, c.t}, DType::F64);
    cpu->attention_forward(tq, tk, tv, out, lse);
    auto gq = device<T>(q), gk = device<T>(k), gv = device<T>(v), gout = poisoned<T>(qn);
    auto glse = poisoned<float>(c.b * c.h * c.t);
    attention_forward<T>(gq.get(), gk.get(), gv.get(), gout.get(), glse.get(), c.b, c.t, c.h, c.kv, c.hd, nullptr);
    const double ef = std::max(max_err(fetch(gout), host(*cpu, out)), max_err(fetch(glse), host(*cpu, lse)));
    fwd_log.add(ef);
    EXPECT_LT(ef, tolerance<T>()) << c.b << "x" << c.t << "x" << c.h << "/" << c.kv << "x" << c.hd;

    // Both backward passes read the kernel's forward outputs (out rounded to T, lse float), so
    // that they see the same inputs: the rounding of a bf16 out moves dO.O, which every dS uses.
    Tensor dq = tensor(*cpu, qs, dq0), dk = tensor(*cpu, ks, dk0), dv = tensor(*cpu, ks, dv0);
    cpu->attention_backward(tensor(*cpu, qs, dout), tq, tk, tv, tensor(*cpu, qs, fetch(gout)),
                            tensor(*cpu, {c.b, c.h, c.t}, fetch(glse)), dq, dk, dv);
    auto gdout = device<T>(dout), gdq = device<T>(dq0), gdk = device<T>(dk0), gdv = device<T>(dv0);
    attention_backward<T>(gdout.get(), gq.get(), gk.get(), gv.get(), gout.get(), glse.get(), gdq.get(), gdk.get(),
                          gdv.get(), c.b, c.t, c.h, c.kv, c.hd, nullptr);
    const double eb = std::max({max_err(fetch(gdq), host(*cpu, dq)), max_err(fetch(gdk), host(*cpu, dk)),
                                max_err(fetch(gdv), host(*cpu, dv))});
    bwd_log.add(eb);
    EXPECT_LT(eb, tolerance<T>()) << c.b << "x" << c.t << "x" << c.h << "/" << c.kv << "x" << c.hd;
  }
}

class CudaAttention : public KernelTest {};
TEST_F(CudaAttention, Fp32MatchesCpu) {
  ErrorLog f("attention fwd fp32 (out, lse)"), b("attention bwd fp32 (dq, dk, dv)");
  check_attention<float>(f, b);
}
TEST_F(CudaAttention, Bf16MatchesCpu) {
  ErrorLog f("attention fwd bf16 (out, lse)"), b("attention bwd bf16 (dq, dk, dv)");
  check_attention<__nv_bfloat16>(f, b);
}

TEST_F(CudaAttention, RejectsSequencesPastSharedMemory) {
  EXPECT_THROW(attention_forward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, 1, attention_max_seq(64) + 1, 1,
                                        1, 64, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace sy::cuda::test
