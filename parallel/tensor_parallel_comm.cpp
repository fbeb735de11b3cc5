#include "parallel/tensor_parallel_comm.h"

#include <stdexcept>
#include <vector>

#include "engine/memory.h"

namespace sy {

namespace {
CommType type_of(const Tensor& t) { return t.dtype() == DType::I32 ? CommType::I32 : comm_type_of(t.dtype()); }

// bfloat16 moves as its bits but is never reduced as them: the values go through float32, are
// reduced there (each rank's partial sum added in float32, rounded once at the end, where a
// bfloat16 reduction would round at every step) and come back rounded to nearest even. Host
// tensors widen on the host; device tensors through the backend's conversion kernels.
struct Widened {
  std::vector<float> host;
  Tensor device;
  void* data() { return device.defined() ? device.raw() : static_cast<void*>(host.data()); }
};
// A float32 buffer of t's size, where t lives.
Widened float_buffer(Backend& be, const Tensor& t) {
  Widened w;
  if (t.device() == DeviceKind::Host) {
    w.host.resize(size_t(t.numel()));
  } else {
    MemScope scope(be, MemCategory::Communication);
    w.device = be.empty({t.numel()}, DType::F32);
  }
  return w;
}
Widened widen(Backend& be, const Tensor& t) {
  Widened w = float_buffer(be, t);
  if (w.device.defined()) {
    be.convert(t.view(0, {t.numel()}), w.device);
    return w;
  }
  const bfloat16* b = t.data<bfloat16>();
  for (size_t i = 0; i < w.host.size(); ++i) w.host[i] = bf16_to_float(b[i]);
  return w;
}
void narrow(Backend& be, Widened& w, const Tensor& t) {
  if (w.device.defined()) return be.convert(w.device, t.view(0, {t.numel()}));
  bfloat16* b = t.data<bfloat16>();
  for (size_t i = 0; i < w.host.size(); ++i) b[i] = float_to_bf16(w.host[i]);
}
}  // namespace

void CommTensorParallel::all_reduce(const Tensor& t, ReduceOp op) {
  if (t.dtype() == DType::BF16) {
    Widened f = widen(be_, t);
    buffers_.all_reduce(f.data(), t.numel(), CommType::F32, op);
    return narrow(be_, f, t);
  }
  buffers_.all_reduce(t.raw(), t.numel(), type_of(t), op);
}

void CommTensorParallel::all_reduce_sum(const Tensor& t) { all_reduce(t, ReduceOp::Sum); }
void CommTensorParallel::all_reduce_max(const Tensor& t) { all_reduce(t, ReduceOp::Max); }

void CommTensorParallel::all_gather_rows(const Tensor& shard, const Tensor& full) {
  if (full.numel() != shard.numel() * comm_.size()) throw std::invalid_argument("all_gather_rows: sizes");
  buffers_.all_gather(shard.raw(), full.raw(), shard.numel(), type_of(shard));
}

void CommTensorParallel::reduce_scatter_rows(const Tensor& full, const Tensor& shard) {
  if (full.numel() != shard.numel() * comm_.size()) throw std::invalid_argument("reduce_scatter_rows: sizes");
  if (full.dtype() == DType::BF16) {
    Widened f = widen(be_, full);
    Widened mine = float_buffer(be_, shard);
    buffers_.reduce_scatter(f.data(), mine.data(), shard.numel(), CommType::F32, ReduceOp::Sum);
    return narrow(be_, mine, shard);
  }
  buffers_.reduce_scatter(full.raw(), shard.raw(), shard.numel(), type_of(shard), ReduceOp::Sum);
}

void CommTensorParallel::all_reduce_host(std::vector<double>& v) {
  comm_.all_reduce(v.data(), int64_t(v.size()), CommType::F64, ReduceOp::Sum);
}

}  // namespace sy
