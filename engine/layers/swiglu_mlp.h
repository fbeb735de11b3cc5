// A SwiGLU feed-forward network, (silu(x w1^T) * (x w3^T)) w2^T: the dense FFN and each shared
// expert. w1 and w3 are declared back to back so they run as one fused [2F, D] GEMM.
#pragma once

#include <string>

#include "engine/params.h"

namespace sy {

class SwiGluMlp {
 public:
  SwiGluMlp(ParamStore& ps, const std::string& prefix, int64_t d_model, int64_t d_ff, double init_std,
            double out_std);
  // out += mlp(xn); xn [N, D]. Keeps what the backward pass needs.
  void forward(Backend& be, const Tensor& xn, const Tensor& out);
  // dxn += d/dxn, parameter gradients +=; dout [N, D].
  void backward(Backend& be, const Tensor& dout, const Tensor& xn, const Tensor& dxn);

  int w1_id() const { return w1_; }

 private:
  void ensure(Backend& be, int64_t n, DType dt);
  ParamStore& ps_;
  int w1_, w3_, w2_;
  int64_t d_ff_;
  Tensor h13_, a_, da_, dh13_;  // saved activations and scratch, sized for the current token count
};

}  // namespace sy
