// A bias added to every row as one GEMM with a column of ones, and its gradient (the row sums)
// as the transposed GEMM: no op of its own in the backend interface.
#pragma once

#include "engine/backend.h"

namespace sy {

// y [rows, w] += ones [rows, 1] b [1, w]  (ones holds at least `rows` rows).
inline void add_row_bias(Backend& be, const Tensor& ones, const Tensor& b, const Tensor& y) {
  be.gemm(ones.rows(0, y.dim(0)), false, b.reshape({1, b.numel()}), false, y, 1, 1);
}

// db [1, w] += ones^T dy.
inline void add_row_bias_grad(Backend& be, const Tensor& ones, const Tensor& dy, const Tensor& db) {
  be.gemm(ones.rows(0, dy.dim(0)), true, dy, false, db.reshape({1, db.numel()}), 1, 1);
}

}  // namespace sy
