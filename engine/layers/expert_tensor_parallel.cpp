#include "engine/layers/expert_tensor_parallel.h"

#include <algorithm>
#include <stdexcept>

namespace sy {

void ExpertTpRegion::plan(Backend& be, const std::vector<Segment>& mine, int64_t rows, DType dt, int64_t d_model) {
  const int n = size();
  if (mine.empty()) throw std::invalid_argument("expert tensor parallelism: no row segments");
  const int64_t n_seg = int64_t(mine.size()), n_exp = int64_t(mine.front().offsets.size()) - 1;
  // Each segment's per-expert counts, the same block for every peer.
  std::vector<int64_t> block;
  int64_t at = 0;
  for (const Segment& s : mine) {
    if (s.begin != at || int64_t(s.offsets.size()) != n_exp + 1)
      throw std::invalid_argument("expert tensor parallelism: segments must tile the rows in order");
    for (int64_t l = 0; l < n_exp; ++l) block.push_back(s.offsets[l + 1] - s.offsets[l]);
    at += s.offsets.back();
  }
  if (at != rows) throw std::invalid_argument("expert tensor parallelism: segments do not cover the rows");
  std::vector<int64_t> send;
  for (int p = 0; p < n; ++p) send.insert(send.end(), block.begin(), block.end());
  const int64_t per_rank = n_seg * n_exp;
  const std::vector<int64_t> recv = ex_.exchange_counts(send, per_rank);

  counts_.assign(n, 0);
  segments_.clear();
  total_ = 0;
  for (int q = 0; q < n; ++q)
    for (int64_t j = 0; j < n_seg; ++j) {
      Segment s{total_, std::vector<int64_t>(n_exp + 1, 0)};
      for (int64_t l = 0; l < n_exp; ++l) s.offsets[l + 1] = s.offsets[l] + recv[q * per_rank + j * n_exp + l];
      total_ += s.offsets.back();
      counts_[q] += s.offsets.back();
      segments_.push_back(std::move(s));
    }
  own_.assign(n, rows);
  const int64_t cap = std::max<int64_t>(1, n * rows);
  if (!copies_.defined() || copies_.dim(0) < cap || copies_.dtype() != dt || copies_.dim(1) != d_model) {
    copies_ = Tensor();  // released before the larger one is allocated
    MemScope scope(be, MemCategory::Workspace);
    copies_ = be.empty({cap, d_model}, dt);
  }
}

void ExpertTpRegion::gather(Backend& be, const Tensor& mine, const Tensor& all) {
  const int64_t r = own_rows();
  // An all-to-all-v sends one block per peer, so the rows go in once per rank (to itself too,
  // which costs nothing on the wire).
  const Tensor send = copies_.rows(0, size() * r);
  if (r > 0)
    for (int p = 0; p < size(); ++p) be.copy(mine, send.rows(p * r, (p + 1) * r));
  ex_.exchange_rows(send, own_, all, counts_);
}

void ExpertTpRegion::reduce_scatter(Backend& be, const Tensor& all, const Tensor& mine) {
  const int64_t r = own_rows();
  const Tensor recv = copies_.rows(0, size() * r);
  ex_.exchange_rows(all, counts_, recv, own_);
  if (r == 0) return;
  be.copy(recv.rows(0, r), mine);
  for (int p = 1; p < size(); ++p) be.axpy(1.0, recv.rows(p * r, (p + 1) * r), mine);
}

}  // namespace sy
