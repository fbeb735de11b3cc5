// Dnn: the one cuDNN wrapper (the emulator's host cuDNN under g++, engine/cuda/emu/emu_cudnn.h):
// causal grouped-query attention forward and backward through cuDNN's fused scaled-dot-product
// attention, built with cudnn-frontend's graph API and cached per shape.
//
// Layouts are the engine's (engine/backend.h): q, o [b, t, h, hd], k, v [b, t, kv, hd] row-major,
// stats [b, h, t] float; query head n reads kv head n / (h / kv). cuDNN's SDPA is defined on
// [b, heads, seq, hd] tensors with arbitrary strides, so ours are described to it as exactly that
// with strides {t*heads*hd, hd, heads*hd, 1}: no transposes. Stats is cuDNN's softmax statistics,
// the natural-log log-sum-exp of each row of scale * q k^T (masked), which is the engine's lse.
//
// Types: bf16 or fp16 storage (cuDNN's fused SDPA has no fp32), fp32 softmax and accumulation.
// Pointers and strides must be 16-byte aligned: hd a multiple of 8, buffers from cudaMalloc.
//
// Unlike Backend::attention_backward, sdpa_backward OVERWRITES dq, dk, dv (cuDNN has no
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
  // shape; the sdpa_* calls themselves throw on anything cuDNN refuses.
  bool sdpa_supported(int64_t b, int64_t t, int64_t h, int64_t kv, int64_t hd, float scale, bool causal,
                      DnnType dtype, std::string* why = nullptr);

  // o = softmax(scale q k^T [causal]) v, stats = its row log-sum-exp. Nothing for b or t == 0.
  void sdpa_forward(const void* q, const void* k, const void* v, void* o, float* stats, int64_t b, int64_t t,
                    int64_t h, int64_t kv, int64_t hd, float scale, bool causal, DnnType dtype, cudaStream_t stream);
  // dq, dk, dv = the gradients of sum(dout * o) (overwritten), from the forward's o and stats.
  void sdpa_backward(const void* dout, const void* q, const void* k, const void* v, const void* o,
                     const float* stats, void* dq, void* dk, void* dv, int64_t b, int64_t t, int64_t h, int64_t kv,
                     int64_t hd, float scale, bool causal, DnnType dtype, cudaStream_t stream);

 private:
  struct Impl;
  Impl* impl_;
};

SY_CUDA_NS_END
}  // namespace sy::cuda
