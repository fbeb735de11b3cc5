// A SwiGLU feed-forward network, (silu(x w1^T) * (x w3^T)) w2 (or its clamped form,
// Backend::GluOpts): the dense FFN and each shared expert. w1 and w3 ([F, D]) are declared back to back so they run as one fused [2F, D] GEMM; w2
// is stored [F, D] (input rows first), so that under tensor parallelism every rank's part of each
// matrix is a block of rows: w1, w3 column-parallel and w2 row-parallel over F / tp.
#pragma once

#include <string>

#include "engine/layers/tensor_parallel.h"
#include "engine/params.h"

namespace sy {

class SwiGluMlp {
 public:
  SwiGluMlp(ParamStore& ps, const std::string& prefix, int64_t d_model, int64_t d_ff, double init_std,
            double out_std, TpPlace tp = {}, Backend::GluOpts glu = {});
  // out += mlp(xn); xn, out [N, D] (with sequence parallelism this rank's rows). Keeps what the
  // backward pass needs.
  void forward(Backend& be, const Tensor& xn, const Tensor& out);
  // dxn += d/dxn, parameter gradients +=; dout like out.
  void backward(Backend& be, const Tensor& dout, const Tensor& xn, const Tensor& dxn);

  int w1_id() const { return w1_; }

 private:
  void ensure(Backend& be, int64_t local_rows, DType dt);
  ParamStore& ps_;
  TpPlace tp_;
  int w1_, w3_, w2_;
  Backend::GluOpts glu_;  // plain or clamped (GPT-OSS) SwiGLU
  int64_t d_model_, d_ff_;  // d_ff_: this rank's share
  Tensor h13_, a_, da_, dh13_;  // saved activations and scratch, sized for the current token count
};

}  // namespace sy
