#include "engine/layers/tensor_parallel.h"

namespace sy {

Tensor tp_enter(const TpPlace& tp, const Tensor& x) {
  if (!tp.seq()) return x;
  tp.comm->all_gather_rows(x, tp.ws->gathered);
  return tp.ws->gathered;
}

void tp_enter_backward(Backend& be, const TpPlace& tp, const Tensor& dx) {
  const Tensor& d = tp.ws->dinput;
  if (tp.sp) {
    tp.comm->reduce_scatter_rows(d, tp.ws->local);
    be.axpy(1.0, tp.ws->local, dx);
  } else {
    tp.comm->all_reduce_sum(d);
    be.axpy(1.0, d, dx);
  }
}

void tp_exit(Backend& be, const TpPlace& tp, const Tensor& out) {
  const Tensor& p = tp.ws->partial;
  if (tp.sp) {
    tp.comm->reduce_scatter_rows(p, tp.ws->local);
    be.axpy(1.0, tp.ws->local, out);
  } else {
    tp.comm->all_reduce_sum(p);
    be.axpy(1.0, p, out);
  }
}

Tensor tp_exit_backward(const TpPlace& tp, const Tensor& dout) {
  if (!tp.seq()) return dout;
  tp.comm->all_gather_rows(dout, tp.ws->partial);
  return tp.ws->partial;
}

Tensor tp_partial(const TpPlace& tp) { return tp.ws->partial; }
Tensor tp_dinput(const TpPlace& tp) { return tp.ws->dinput; }

}  // namespace sy
