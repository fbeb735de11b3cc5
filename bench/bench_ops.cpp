// Per-op timings of the CPU backend in float32 at the target model's shapes (d_model 256, 8 heads
// of 32, 4 KV heads, seq 256, batch 8, 8 experts top-2 of width 512): ms per call (best of
// several) and GFLOP/s for the GEMM-bound ops, next to the sgemm peak on this machine.
//   bench_ops [--quick]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/host_io.h"
#include "engine/rng.h"

using namespace sy;
using Clock = std::chrono::steady_clock;

namespace {

int g_reps = 20;

// Best wall time of `reps` calls after one warm-up call, in ms.
double time_ms(const std::function<void()>& f, int reps = g_reps) {
  f();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(Clock::now() - t).count());
  }
  return best;
}

void row(const char* name, double ms, double flops = 0) {
  if (flops > 0)
    std::printf("  %-34s %9.3f ms  %7.1f GFLOP/s\n", name, ms, flops / (ms * 1e-3) / 1e9);
  else
    std::printf("  %-34s %9.3f ms\n", name, ms);
}

Tensor randn(Backend& be, const Shape& s, uint64_t seed, double scale = 1.0) {
  Philox rng(seed, 1);
  std::vector<double> v(static_cast<size_t>(shape_numel(s)));
  for (double& x : v) x = scale * rng.normal();
  Tensor t = be.empty(s, DType::F32);
  upload_f64(be, v, t);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && !std::strcmp(argv[1], "--quick")) g_reps = 3;
  auto be = make_cpu_backend();
  Backend& b = *be;
  const DType f32 = DType::F32;
  const int64_t N = 2048, D = 256, F = 512, E = 8, K = 2, B = 8, T = 256, H = 8, KV = 4, HD = 32, V = 256;
  std::printf("CPU backend ops, float32, %d OpenMP threads\n", omp_get_max_threads());

  std::printf("sgemm peak (C = A B^T):\n");
  {
    Tensor a = randn(b, {2048, 256}, 1), w = randn(b, {256, 256}, 2), c = b.empty({2048, 256}, f32);
    row("2048x256x256", time_ms([&] { b.gemm(a, false, w, true, c, 1, 0); }, 50), 2.0 * 2048 * 256 * 256);
    Tensor a4 = randn(b, {4096, 4096}, 3), b4 = randn(b, {4096, 4096}, 4), c4 = b.empty({4096, 4096}, f32);
    row("4096x4096x4096", time_ms([&] { b.gemm(a4, false, b4, true, c4, 1, 0); }, 2), 2.0 * 4096 * 4096 * 4096);
  }

  std::printf("dense projections (N=%ld, D=%ld):\n", long(N), long(D));
  Tensor x = randn(b, {N, D}, 5), wq = randn(b, {D, D}, 6, 0.06), wkv = randn(b, {KV * HD, D}, 7, 0.06);
  Tensor q2 = b.empty({N, D}, f32), kv2 = b.empty({N, KV * HD}, f32), dwq = b.zeros({D, D}, f32),
         dx = b.zeros({N, D}, f32);
  row("x wq^T      [2048,256]x[256,256]", time_ms([&] { b.gemm(x, false, wq, true, q2, 1, 0); }), 2.0 * N * D * D);
  row("x wk^T      [2048,256]x[128,256]", time_ms([&] { b.gemm(x, false, wkv, true, kv2, 1, 0); }), 2.0 * N * D * KV * HD);
  row("dW += dY^T X (256x256, K=2048)", time_ms([&] { b.gemm(q2, true, x, false, dwq, 1, 1); }), 2.0 * N * D * D);
  row("dX += dY W   [2048,256]x[256,256]", time_ms([&] { b.gemm(q2, false, wq, false, dx, 1, 1); }), 2.0 * N * D * D);

  std::printf("norm / embedding / rope:\n");
  Tensor nw = randn(b, {D}, 8), y = b.empty({N, D}, f32), rstd = b.empty({N}, f32), dnw = b.zeros({D}, f32);
  row("rmsnorm_forward", time_ms([&] { b.rmsnorm_forward(x, nw, 1e-5, y, rstd); }));
  row("rmsnorm_backward", time_ms([&] { b.rmsnorm_backward(y, x, nw, rstd, dx, dnw); }));
  Tensor table = randn(b, {V, D}, 9), dtable = b.zeros({V, D}, f32), ids = b.empty({N}, DType::I32);
  {
    std::vector<int32_t> h(N);
    for (int64_t i = 0; i < N; ++i) h[i] = int32_t((i * 7919) % V);
    b.upload(h.data(), ids);
  }
  row("embedding_forward", time_ms([&] { b.embedding_forward(table, ids, y); }));
  row("embedding_backward", time_ms([&] { b.embedding_backward(y, ids, dtable); }));
  Tensor cos = randn(b, {T, HD / 2}, 10), sin = randn(b, {T, HD / 2}, 11), pos = b.empty({N}, DType::I32);
  {
    std::vector<int32_t> h(N);
    for (int64_t i = 0; i < N; ++i) h[i] = int32_t(i % T);
    b.upload(h.data(), pos);
  }
  Tensor q3 = q2.reshape({N, H, HD}), dq3 = b.zeros({N, H, HD}, f32);
  row("rope_forward (q, in place)", time_ms([&] { b.rope_forward(q3, pos, cos, sin, q3); }));
  row("rope_backward (q)", time_ms([&] { b.rope_backward(q3, pos, cos, sin, dq3); }));

  std::printf("attention (B=%ld T=%ld H=%ld KV=%ld hd=%ld; FLOPs counted for the causal half):\n", long(B), long(T),
              long(H), long(KV), long(HD));
  {
    Tensor q = randn(b, {B, T, H, HD}, 12), k = randn(b, {B, T, KV, HD}, 13), v = randn(b, {B, T, KV, HD}, 14);
    Tensor o = b.empty({B, T, H, HD}, f32), lse = b.empty({B, H, T}, f32), dout = randn(b, {B, T, H, HD}, 15);
    Tensor dq = b.zeros(q.shape(), f32), dk = b.zeros(k.shape(), f32), dv = b.zeros(v.shape(), f32);
    const double pairs = double(B) * H * T * (T + 1) / 2;  // (query, key) pairs attended
    row("attention_forward", time_ms([&] { b.attention_forward(q, k, v, o, lse); }), 4.0 * pairs * HD);
    row("attention_backward", time_ms([&] { b.attention_backward(dout, q, k, v, o, lse, dq, dk, dv); }),
        8.0 * pairs * HD);
  }

  std::printf("MoE (N=%ld, E=%ld, top-%ld, F=%ld):\n", long(N), long(E), long(K), long(F));
  Tensor rw = randn(b, {E, D}, 16, 0.06), logits = b.empty({N, E}, f32), scores = b.empty({N, E}, f32),
         idx = b.empty({N, K}, DType::I32), w = b.empty({N, K}, f32), dlogits = b.zeros({N, E}, f32),
         dw = randn(b, {N, K}, 17), coef = randn(b, {E}, 18);
  row("router gemm [2048,256]x[8,256]^T", time_ms([&] { b.gemm(x, false, rw, true, logits, 1, 0); }), 2.0 * N * D * E);
  row("router_forward (softmax)", time_ms([&] { b.router_forward(logits, Tensor(), ScoreFn::Softmax, K, true, scores, idx, w); }));
  row("router_backward (softmax, aux)", time_ms([&] {
        b.router_backward(dw, coef, logits, scores, idx, ScoreFn::Softmax, true, dlogits);
      }));
  row("zloss_forward", time_ms([&] { b.zloss_forward(logits); }));
  row("zloss_backward", time_ms([&] { b.zloss_backward(logits, 1e-3, dlogits); }));
  // A dispatch from the router's choices: rows grouped by expert.
  std::vector<int32_t> idx_h(N * K);
  b.download(idx, idx_h.data());
  std::vector<int64_t> offsets(E + 1, 0);
  for (int32_t e : idx_h) ++offsets[e + 1];
  for (int64_t e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
  std::vector<int32_t> src(N * K), slot(N * K);
  {
    std::vector<int64_t> fillp(offsets.begin(), offsets.end() - 1);
    for (int64_t i = 0; i < N * K; ++i) {
      const int64_t r = fillp[idx_h[i]]++;
      src[r] = int32_t(i / K);
      slot[i] = int32_t(r);
    }
  }
  const int64_t M = N * K;
  Tensor tsrc = b.empty({M}, DType::I32), tslot = b.empty({N, K}, DType::I32);
  b.upload(src.data(), tsrc);
  b.upload(slot.data(), tslot);
  Tensor xp = b.empty({M, D}, f32), yp = randn(b, {M, D}, 19), dyp = b.zeros({M, D}, f32), out = b.zeros({N, D}, f32),
         dwk = b.zeros({N, K}, f32), dxp = randn(b, {M, D}, 20);
  row("gather_rows", time_ms([&] { b.gather_rows(x, tsrc, xp); }));
  row("gather_rows_backward", time_ms([&] { b.gather_rows_backward(dxp, tslot, dx); }));
  row("combine_forward", time_ms([&] { b.combine_forward(yp, tslot, w, out); }));
  row("combine_backward", time_ms([&] { b.combine_backward(out, yp, tslot, w, dyp, dwk); }));
  {
    std::vector<Tensor> w13, w2, dw13, dw2;
    for (int64_t e = 0; e < E; ++e) {
      w13.push_back(randn(b, {2 * F, D}, 30 + e, 0.06));
      w2.push_back(randn(b, {F, D}, 40 + e, 0.04));
      dw13.push_back(b.zeros({2 * F, D}, f32));
      dw2.push_back(b.zeros({F, D}, f32));
    }
    Tensor h13 = b.empty({M, 2 * F}, f32), a = b.empty({M, F}, f32), ye = b.empty({M, D}, f32),
           dxe = b.zeros({M, D}, f32);
    const double flops = 6.0 * M * D * F;
    std::printf("  (expert rows:");
    for (int64_t e = 0; e < E; ++e) std::printf(" %ld", long(offsets[e + 1] - offsets[e]));
    std::printf(")\n");
    row("grouped_swiglu_forward", time_ms([&] { b.grouped_swiglu_forward(xp, offsets, w13, w2, h13, a, ye); }), flops);
    row("grouped_swiglu_backward", time_ms([&] {
          b.grouped_swiglu_backward(yp, xp, offsets, w13, w2, h13, a, dxe, dw13, dw2);
        }),
        2 * flops);
    Tensor sw = b.empty({M, F}, f32), dh = b.zeros({M, 2 * F}, f32);
    row("swiglu_forward [4096, 2x512]", time_ms([&] { b.swiglu_forward(h13, sw); }));
    row("swiglu_backward [4096, 2x512]", time_ms([&] { b.swiglu_backward(sw, h13, dh); }));
  }

  std::printf("loss / optimizer:\n");
  {
    Tensor lg = randn(b, {N, V}, 50), lse = b.empty({N}, f32), dl = b.zeros({N, V}, f32);
    row("cross_entropy_forward [2048,256]", time_ms([&] { b.cross_entropy_forward(lg, ids, lse); }));
    row("cross_entropy_backward", time_ms([&] { b.cross_entropy_backward(lg, ids, lse, 1.0 / N, dl); }));
    const int64_t P = 8 << 20;
    Tensor p = randn(b, {P}, 51), g = randn(b, {P}, 52), m = b.zeros({P}, f32), v = b.zeros({P}, f32);
    AdamWArgs args;
    args.lr = 1e-3;
    args.weight_decay = 0.1;
    row("adamw_update (8M params)", time_ms([&] { b.adamw_update(p, g, m, v, args); }, 5));
    row("sum_squares (8M)", time_ms([&] { b.sum_squares(g); }, 5));
    row("axpy (8M)", time_ms([&] { b.axpy(0.5, g, p); }, 5));
  }
  return 0;
}
