#include "engine/layers/tensor_parallel.h"

namespace sy {

Tensor tp_enter(Backend&, const TpPlace& tp, const Tensor& x, const Tensor& gathered) {
  if (!tp.seq()) return x;
  tp.comm->all_gather_rows(x, gathered);
  return gathered;
}

void tp_enter_backward(Backend& be, const TpPlace& tp, const Tensor& d_full, const Tensor& dx, const Tensor& scratch) {
  if (!tp.on()) {
    be.axpy(1.0, d_full, dx);
  } else if (tp.sp) {
    tp.comm->reduce_scatter_rows(d_full, scratch);
    be.axpy(1.0, scratch, dx);
  } else {
    tp.comm->all_reduce_sum(d_full);
    be.axpy(1.0, d_full, dx);
  }
}

void tp_exit(Backend& be, const TpPlace& tp, const Tensor& partial, const Tensor& out, const Tensor& scratch) {
  if (!tp.on()) {
    be.axpy(1.0, partial, out);
  } else if (tp.sp) {
    tp.comm->reduce_scatter_rows(partial, scratch);
    be.axpy(1.0, scratch, out);
  } else {
    tp.comm->all_reduce_sum(partial);
    be.axpy(1.0, partial, out);
  }
}

Tensor tp_exit_backward(Backend&, const TpPlace& tp, const Tensor& dout, const Tensor& gathered) {
  if (!tp.seq()) return dout;
  tp.comm->all_gather_rows(dout, gathered);
  return gathered;
}

}  // namespace sy
