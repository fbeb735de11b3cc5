// Dnn: the one cuDNN wrapper (the emulator's host cuDNN under g++, engine/cuda/emu/emu_cudnn.h):
// causal grouped-query attention forward and backward through cuDNN's fused scaled-dot-product
// attention, built with cudnn-frontend's graph API and cached per shape.
//
// Layouts are the engine's (engine/backend.h): q [b, t, h, hd], k [b, t, kv, hd], v [b, t, kv, hv],
// o [b, t, h, hv] row-major, stats [b, h, t] float; query head n reads kv head n / (h / kv). cuDNN's
// SDPA is defined on [b, heads, seq, d] tensors with arbitrary strides, so ours are described to
// it as exactly that with strides {t*heads*d, d, heads*d, 1}: no transposes. Stats is cuDNN's
// softmax statistics, the natural-log log-sum-exp of each row of scale * q k^T (masked, sink
// included), which is the engine's lse.
//
// Options (SdpaDesc), each a cudnn-frontend SDPA attribute: the scale (set_attn_scale), hv != hd
// (V's and O's own head dim), the causal mask (a top-left diagonal band with right bound 0), a
// sliding window W (left bound W: query i sees keys i - W < j <= i) and sinks (set_sink_token: an
// fp32 [1, h, 1, 1] logit per query head in every row's denominator; the backward's
// set_dsink_token writes its gradient, fp32 [h], -sum over the head's rows of exp(sink - stats) *
// rowsum(dO o)).
//
// Types: bf16 or fp16 storage (cuDNN's fused SDPA has no fp32), fp32 softmax and accumulation;
// sinks and dsinks fp32 whatever the storage type. Pointers and strides must be 16-byte aligned:
// hd and hv multiples of 8, buffers from cudaMalloc.
//
// Unlike Backend::attention_backward, sdpa_backward OVERWRITES dq, dk, dv and dsinks (cuDNN has no
// accumulate); the caller adds them where it needs a sum (docs/cuda.md, "Fused attention").
//
// Not thread-safe (one handle, one plan cache, one workspace), and its plans belong to the device
// current at their build: one Dnn per backend (per device).
#pragma once

#include <cstdint>
#include <string>

#include "engine/cuda/cuda_compat.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

enum class DnnType : uint8_t { BF16, F16 };

// One attention problem: what a cached plan is built for.
struct SdpaDesc {
  int64_t b, t, h, kv, hd, hv;
  float scale;
  DnnType dtype;
  bool causal = true;
  int64_t window = 0;  // W > 0 (causal only): query i sees keys i - W < j <= i; W >= t is no window
  bool sinks = false;  // sdpa_forward reads sinks [h], sdpa_backward also writes dsinks [h]
};

class Dnn {
 public:
  Dnn();  // cheap: the cuDNN handle is created at the first call that needs it
  ~Dnn();
  Dnn(const Dnn&) = delete;
  Dnn& operator=(const Dnn&) = delete;

  // False in a GPU build made without cuDNN or its frontend headers (every call below then throws,
  // and sdpa_supported answers false with that reason).
  static bool available();

  // Whether cuDNN runs this attention on this device: builds (and caches) the forward and backward
  // plans; on failure returns false with cuDNN's reason in *why. For choosing the path once per
  // shape; the sdpa_* calls themselves throw on anything cuDNN refuses. Bad head counts or a
  // window without the causal mask throw std::invalid_argument.
  bool sdpa_supported(const SdpaDesc& d, std::string* why = nullptr);

  // o = softmax(scale q k^T [masked] [+ sink]) v, stats = its row log-sum-exp. Nothing for b or
  // t == 0. sinks: fp32 [h] when d.sinks, else ignored.
  void sdpa_forward(const SdpaDesc& d, const void* q, const void* k, const void* v, const float* sinks, void* o,
                    float* stats, cudaStream_t stream);
  // dq, dk, dv (and dsinks, fp32 [h], when d.sinks) = the gradients of sum(dout * o), overwritten,
  // from the forward's o and stats.
  void sdpa_backward(const SdpaDesc& d, const void* dout, const void* q, const void* k, const void* v, const void* o,
                     const float* stats, const float* sinks, void* dq, void* dk, void* dv, float* dsinks,
                     cudaStream_t stream);

 private:
  struct Impl;
  Impl* impl_;
};

SY_CUDA_NS_END
}  // namespace sy::cuda
