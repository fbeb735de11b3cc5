// The simple causal GQA attention kernels, and CudaBackend's attention ops (which route bf16
// through cuDNN where it runs the shape), against the CPU backend's attention in float64: every
// option of Backend::AttentionOpts (hv != hd, sliding windows, sinks and their gradient, the scale)
// alone and combined.
#include <string>

#include "engine/cuda/backend/cuda_backend.h"
#include "engine/cuda/dnn/dnn.h"
#include "tests/cuda/kernel_test_util.h"

namespace sy::cuda::test {
namespace {

using optest::host;
using optest::tensor;

struct Case {
  int64_t b, t, h, kv, hd, hv;
  int64_t window = 0;
  bool sinks = false;
  double scale = 0;
  std::string str() const {
    return std::to_string(b) + "x" + std::to_string(t) + "x" + std::to_string(h) + "/" + std::to_string(kv) + "x" +
           std::to_string(hd) + "/" + std::to_string(hv) + " window " + std::to_string(window) +
           (sinks ? " sinks" : "") + " scale " + std::to_string(scale);
  }
};

const Case kCases[] = {
    // Plain causal GQA: one token; groups of 2 and 3 and MHA; rows past a block of 128 threads.
    {1, 1, 1, 1, 2, 2}, {2, 7, 4, 2, 16, 16}, {1, 33, 3, 1, 8, 8}, {2, 130, 2, 2, 24, 24},
    // hv != hd: smaller, larger, and MLA's 192 / 128.
    {2, 9, 4, 2, 24, 16}, {1, 13, 3, 3, 8, 20}, {1, 5, 2, 1, 192, 128},
    // Windows: 1 (each query sees itself), below T (129 keys: rows past a block of threads), == T, > T.
    {2, 11, 2, 1, 8, 8, 1}, {1, 150, 2, 1, 8, 8, 129}, {2, 33, 3, 1, 16, 16, 5}, {1, 9, 2, 2, 8, 8, 9},
    {2, 7, 2, 1, 8, 8, 100},
    // Sinks: GQA, one token (the sink is then the only other softmax term), odd sizes.
    {2, 9, 4, 2, 16, 16, 0, true}, {1, 1, 2, 1, 8, 8, 0, true}, {1, 33, 3, 3, 12, 12, 0, true},
    // The scale alone, then everything together.
    {1, 6, 2, 2, 8, 8, 0, false, 0.7}, {2, 40, 6, 2, 24, 16, 5, true, 0.3}, {1, 5, 2, 1, 192, 128, 3, true},
    {1, 130, 2, 1, 16, 8, 64, true, 0.2},
};

// Inputs of one case, rounded to T; sinks spread wider than the scores so that some dominate.
struct Inputs {
  Vec q, k, v, dout, dq0, dk0, dv0, sinks, dsinks0;
  Inputs(const Case& c, uint64_t& seed, Vec (*draw)(int64_t, uint64_t, double)) {
    const int64_t qn = c.b * c.t * c.h * c.hd, kn = c.b * c.t * c.kv * c.hd, vn = c.b * c.t * c.kv * c.hv;
    const int64_t on = c.b * c.t * c.h * c.hv;
    q = draw(qn, ++seed, 1), k = draw(kn, ++seed, 1), v = draw(vn, ++seed, 1), dout = draw(on, ++seed, 1);
    dq0 = draw(qn, ++seed, 1), dk0 = draw(kn, ++seed, 1), dv0 = draw(vn, ++seed, 1);
    sinks = draw(c.sinks ? c.h : 0, ++seed, 2), dsinks0 = draw(c.sinks ? c.h : 0, ++seed, 1);
  }
};

template <class T> Vec draw(int64_t n, uint64_t seed, double scale) { return random<T>(n, seed, scale); }

// The CPU reference: forward on the inputs; backward on the device's own out and lse (rounded as
// the device stored them), so both passes see the same inputs.
struct Reference {
  std::unique_ptr<Backend> cpu = make_cpu_backend();
  Shape qs, ks, vs, os, ls;
  Tensor q, k, v, sinks;
  Backend::AttentionOpts opts;
  Reference(const Case& c, const Inputs& in)
      : qs{c.b, c.t, c.h, c.hd}, ks{c.b, c.t, c.kv, c.hd}, vs{c.b, c.t, c.kv, c.hv}, os{c.b, c.t, c.h, c.hv},
        ls{c.b, c.h, c.t} {
    q = tensor(*cpu, qs, in.q), k = tensor(*cpu, ks, in.k), v = tensor(*cpu, vs, in.v);
    opts.window = c.window, opts.scale = c.scale;
    if (c.sinks) opts.sinks = tensor(*cpu, {c.h}, in.sinks);
  }
  std::pair<Vec, Vec> forward() {
    Tensor out = cpu->empty(os, DType::F64), lse = cpu->empty(ls, DType::F64);
    cpu->attention_forward(q, k, v, out, lse, opts);
    return {host(*cpu, out), host(*cpu, lse)};
  }
  // dq, dk, dv, dsinks: the start values plus the gradients.
  std::vector<Vec> backward(const Inputs& in, const Vec& out, const Vec& lse) {
    Tensor dq = tensor(*cpu, qs, in.dq0), dk = tensor(*cpu, ks, in.dk0), dv = tensor(*cpu, vs, in.dv0);
    Tensor ds = opts.sinks.defined() ? tensor(*cpu, {qs[2]}, in.dsinks0) : Tensor{};
    cpu->attention_backward(tensor(*cpu, os, in.dout), q, k, v, tensor(*cpu, os, out), tensor(*cpu, ls, lse), dq, dk,
                            dv, opts, ds);
    return {host(*cpu, dq), host(*cpu, dk), host(*cpu, dv), ds.defined() ? host(*cpu, ds) : Vec{}};
  }
};

struct Logs {
  ErrorLog fwd, bwd, dsinks;
  explicit Logs(const std::string& what)
      : fwd("attention fwd " + what + " (out, lse)"), bwd("attention bwd " + what + " (dq, dk, dv)"),
        dsinks("attention bwd " + what + " (dsinks)") {}
};

template <class T> void check_kernels(Logs& log) {
  uint64_t seed = 1400;
  for (const Case& c : kCases) {
    const Inputs in(c, seed, draw<T>);
    Reference ref(c, in);
    const auto [want_out, want_lse] = ref.forward();
    const AttentionDims d{c.b, c.t, c.h, c.kv, c.hd, c.hv, c.scale, c.window};
    auto gq = device<T>(in.q), gk = device<T>(in.k), gv = device<T>(in.v), gsinks = device<T>(in.sinks);
    auto gout = poisoned<T>(int64_t(want_out.size()));
    auto glse = poisoned<float>(int64_t(want_lse.size()));
    const T* sinks = c.sinks ? gsinks.get() : nullptr;
    attention_forward<T>(gq.get(), gk.get(), gv.get(), sinks, gout.get(), glse.get(), d, nullptr);
    const Vec got_out = fetch(gout), got_lse = fetch(glse);
    const double ef = std::max(max_err(got_out, want_out), max_err(got_lse, want_lse));
    log.fwd.add(ef);
    EXPECT_LT(ef, tolerance<T>()) << c.str();

    const std::vector<Vec> want = ref.backward(in, got_out, got_lse);
    auto gdout = device<T>(in.dout), gdq = device<T>(in.dq0), gdk = device<T>(in.dk0), gdv = device<T>(in.dv0);
    auto gds = device<float>(in.dsinks0);  // a parameter's gradient: float for either T
    attention_backward<T>(gdout.get(), gq.get(), gk.get(), gv.get(), gout.get(), glse.get(), sinks, gdq.get(),
                          gdk.get(), gdv.get(), c.sinks ? gds.get() : nullptr, d, nullptr);
    const double eb = std::max({max_err(fetch(gdq), want[0]), max_err(fetch(gdk), want[1]),
                                max_err(fetch(gdv), want[2])});
    log.bwd.add(eb);
    EXPECT_LT(eb, tolerance<T>()) << c.str();
    if (c.sinks) {  // summed in double, added in float: the fp32 bound for both types
      const double es = max_err(fetch(gds), want[3]);
      log.dsinks.add(es);
      EXPECT_LT(es, 1e-5) << c.str();
    }
  }
}

class CudaAttention : public KernelTest {};
TEST_F(CudaAttention, Fp32MatchesCpu) {
  Logs log("fp32");
  check_kernels<float>(log);
}
TEST_F(CudaAttention, Bf16MatchesCpu) {
  Logs log("bf16");
  check_kernels<__nv_bfloat16>(log);
}

TEST_F(CudaAttention, RejectsWhatTheKernelsCannotRun) {
  const int64_t max = attention_max_keys(64, 32);
  auto fwd = [](const AttentionDims& d) {
    attention_forward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, d, nullptr);
  };
  EXPECT_THROW(fwd({1, max + 1, 1, 1, 64, 32}), std::invalid_argument);             // t keys past shared memory
  EXPECT_THROW(fwd({1, max + 2, 1, 1, 64, 32, 0, max + 1}), std::invalid_argument);  // so is a window of them
  EXPECT_THROW(fwd({1, 4, 1, 1, 64, 32, 0, -1}), std::invalid_argument);
  EXPECT_THROW(fwd({1, 4, 1, 1, 64, 32, -1.0}), std::invalid_argument);
  EXPECT_THROW(fwd({1, 4, 3, 2, 64, 32}), std::invalid_argument);
  float one = 1;  // dsinks without sinks: never read, refused first
  EXPECT_THROW(attention_backward<float>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                         nullptr, nullptr, &one, {1, 4, 1, 1, 8, 8}, nullptr),
               std::invalid_argument);
}

// ---- CudaBackend::attention_forward / attention_backward --------------------------------------------


// max_err for a sum start + gradient rounded twice: cuDNN writes its bf16 gradient (one rounding)
// and the backend adds it to the accumulator (another). Both are relative to the terms, so an
// element where start and gradient cancel is measured against the gradient's size, not the sum's
// (the kernels' single rounding meets max_err itself, as the fp32 backend test shows).
double sum_err(const Vec& got, const Vec& start, const Vec& want) {
  double big = 1e-30, worst = 0;
  for (double w : want) big = std::max(big, std::abs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double terms = std::max({std::abs(want[i]), std::abs(want[i] - start[i]), 1e-2 * big});
    worst = std::max(worst, std::abs(got[i] - want[i]) / terms);
  }
  return worst;
}

// bf16 cases cuDNN runs (hd and hv multiples of 8) and ones it refuses (sinks with one token,
// which the frontend does not take; head dims not multiples of 8), so both routes are held to the
// CPU op.
const Case kBackendCases[] = {
    {2, 9, 4, 2, 24, 16, 4, true, 0.3}, {1, 6, 2, 1, 192, 128, 0, true}, {1, 10, 2, 2, 16, 16, 20},
    {1, 17, 4, 1, 8, 8, 1, false, 0.5},
    // Refused by cuDNN: sinks with one token, hd 12, hv 12.
    {1, 1, 2, 2, 8, 8, 0, true}, {2, 7, 2, 1, 12, 12, 3, true}, {1, 5, 2, 2, 16, 12, 2},
};

template <class T> void check_backend(Logs& log) {
  const DType dt = std::is_same_v<T, float> ? DType::F32 : DType::BF16;
  auto gpu = make_backend();
  uint64_t seed = 1900;
  int fused = 0;
  Dnn dnn;  // the backend's rule for bf16: cuDNN where it builds both plans
  for (const Case& c : kBackendCases) {
    const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(c.hd));
    fused += Dnn::available() &&
             dnn.sdpa_supported({c.b, c.t, c.h, c.kv, c.hd, c.hv, float(scale), DnnType::BF16, true, c.window, c.sinks});
    const Inputs in(c, seed, draw<T>);
    Reference ref(c, in);
    const auto [want_out, want_lse] = ref.forward();
    Backend::AttentionOpts opts;
    opts.window = c.window, opts.scale = c.scale;
    if (c.sinks) opts.sinks = to_device(*gpu, {c.h}, in.sinks, dt);
    Tensor q = to_device(*gpu, ref.qs, in.q, dt), k = to_device(*gpu, ref.ks, in.k, dt), v = to_device(*gpu, ref.vs, in.v, dt);
    Tensor out = gpu->empty(ref.os, dt), lse = gpu->empty(ref.ls, DType::F32);
    gpu->fill(out, std::nan(""));
    gpu->fill(lse, std::nan(""));
    gpu->attention_forward(q, k, v, out, lse, opts);
    const Vec got_out = from_device(*gpu, out), got_lse = from_device(*gpu, lse);
    const double ef = std::max(max_err(got_out, want_out), max_err(got_lse, want_lse));
    log.fwd.add(ef);
    EXPECT_LT(ef, tolerance<T>()) << c.str();

    const std::vector<Vec> want = ref.backward(in, got_out, got_lse);
    Tensor dq = to_device(*gpu, ref.qs, in.dq0, dt), dk = to_device(*gpu, ref.ks, in.dk0, dt), dv = to_device(*gpu, ref.vs, in.dv0, dt);
    Tensor ds = c.sinks ? to_device(*gpu, {c.h}, in.dsinks0, DType::F32) : Tensor{};  // float32, as the model's gradients
    gpu->attention_backward(to_device(*gpu, ref.os, in.dout, dt), q, k, v, out, lse, dq, dk, dv, opts, ds);
    const bool f32 = std::is_same_v<T, float>;
    auto err = [&](const Tensor& got, const Vec& start, const Vec& w) {
      return f32 ? max_err(from_device(*gpu, got), w) : sum_err(from_device(*gpu, got), start, w);
    };
    const double eb = std::max({err(dq, in.dq0, want[0]), err(dk, in.dk0, want[1]), err(dv, in.dv0, want[2])});
    log.bwd.add(eb);
    EXPECT_LT(eb, tolerance<T>()) << c.str();
    if (c.sinks) {
      const double es = max_err(from_device(*gpu, ds), want[3]);
      log.dsinks.add(es);
      EXPECT_LT(es, tolerance<T>()) << c.str();
    }
  }
  // Both bf16 routes are exercised (in a build with cuDNN): three cases cuDNN refuses.
  if (Dnn::available()) {
    EXPECT_EQ(fused, int(std::size(kBackendCases)) - 3);
  }
}

TEST_F(CudaAttention, BackendFp32MatchesCpu) {
  Logs log("backend fp32");
  check_backend<float>(log);
}
TEST_F(CudaAttention, BackendBf16MatchesCpu) {
  Logs log("backend bf16, cuDNN or kernels");
  check_backend<__nv_bfloat16>(log);
}

// One-line errors naming the op, as the CPU backend's.
TEST_F(CudaAttention, BackendChecksOptions) {
  auto gpu = make_backend();
  const DType f = DType::F32;
  Tensor q = gpu->zeros({1, 4, 2, 8}, f), k = gpu->zeros({1, 4, 1, 8}, f), v = gpu->zeros({1, 4, 1, 6}, f);
  Tensor out = gpu->empty({1, 4, 2, 6}, f), lse = gpu->empty({1, 2, 4}, f);
  auto fwd_fails = [&](const Backend::AttentionOpts& o, const Tensor& vv, const Tensor& oo) {
    try {
      gpu->attention_forward(q, k, vv, oo, lse, o);
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()).rfind("attention_forward: ", 0), 0u) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      return true;
    }
    return false;
  };
  Backend::AttentionOpts o;
  EXPECT_FALSE(fwd_fails(o, v, out));  // hv 6 != hd 8 is fine
  EXPECT_TRUE(fwd_fails(o, v, gpu->empty({1, 4, 2, 8}, f)));  // out must have hv
  o.window = -1;
  EXPECT_TRUE(fwd_fails(o, v, out));
  o.window = 0, o.scale = -0.5;
  EXPECT_TRUE(fwd_fails(o, v, out));
  o.scale = 0, o.sinks = gpu->zeros({3}, f);  // one per query head
  EXPECT_TRUE(fwd_fails(o, v, out));
  o.sinks = gpu->zeros({2}, DType::BF16);  // q's dtype
  EXPECT_TRUE(fwd_fails(o, v, out));
  o.sinks = gpu->zeros({2}, f);
  EXPECT_FALSE(fwd_fails(o, v, out));
  Tensor dq = gpu->zeros(q.shape(), f), dk = gpu->zeros(k.shape(), f), dv = gpu->zeros(v.shape(), f);
  EXPECT_THROW(gpu->attention_backward(gpu->zeros(out.shape(), f), q, k, v, out, lse, dq, dk, dv, o, Tensor{}),
               std::invalid_argument);  // sinks without dsinks
  EXPECT_THROW(gpu->attention_backward(gpu->zeros(out.shape(), f), q, k, v, out, lse, dq, dk, dv,
                                       Backend::AttentionOpts{}, gpu->zeros({2}, f)),
               std::invalid_argument);  // dsinks without sinks
  EXPECT_THROW(gpu->attention_backward(gpu->zeros(q.shape(), f), q, k, v, out, lse, dq, dk, dv, o, gpu->zeros({2}, f)),
               std::invalid_argument);  // dout has out's shape (hv), not q's
  // Under bf16 the sinks are bf16 (the weights' copy) but their gradient is float32 (the master
  // gradient the model hands in): a bf16 dsinks is refused.
  const DType b = DType::BF16;
  Backend::AttentionOpts ob;
  ob.sinks = gpu->zeros({2}, b);
  auto bwd_b = [&](const Tensor& ds) {
    gpu->attention_backward(gpu->zeros(out.shape(), b), gpu->zeros(q.shape(), b), gpu->zeros(k.shape(), b),
                            gpu->zeros(v.shape(), b), gpu->zeros(out.shape(), b), lse, gpu->zeros(q.shape(), b),
                            gpu->zeros(k.shape(), b), gpu->zeros(v.shape(), b), ob, ds);
  };
  EXPECT_THROW(bwd_b(gpu->zeros({2}, b)), std::invalid_argument);
  EXPECT_NO_THROW(bwd_b(gpu->zeros({2}, f)));
}

}  // namespace
}  // namespace sy::cuda::test
