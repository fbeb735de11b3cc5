#include "engine/layers/expert_dispatcher.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace sy {

ExpertDispatcher::ExpertDispatcher(TokenExchange& ex, int64_t n_experts, int64_t first_local, int64_t n_local,
                                   ExpertOrder order)
    : ex_(ex), n_experts_(n_experts), first_(first_local), n_local_(n_local), order_(order) {
  // Experts are split evenly and contiguously, so rank p owns [p * L, (p + 1) * L): the plan's
  // expert-grouped rows are then already grouped by destination rank.
  if (n_local <= 0 || n_local * ex.n_ranks() != n_experts || first_local != ex.rank() * n_local)
    throw std::invalid_argument("expert dispatcher: rank " + std::to_string(ex.rank()) + " of " +
                                std::to_string(ex.n_ranks()) + " cannot own experts [" + std::to_string(first_local) +
                                ", " + std::to_string(first_local + n_local) + ") of " + std::to_string(n_experts));
}

void ExpertDispatcher::plan(Backend& be, const std::vector<int64_t>& offsets, DType dt, int64_t d_model) {
  const int n = ex_.n_ranks();
  const int64_t L = n_local_;
  if (int64_t(offsets.size()) != n_experts_ + 1) throw std::invalid_argument("expert dispatcher: offsets size");
  std::vector<int64_t> send_le(n_experts_);
  for (int64_t e = 0; e < n_experts_; ++e) send_le[e] = offsets[e + 1] - offsets[e];
  const std::vector<int64_t> recv_le = ex_.exchange_counts(send_le, L);

  send_counts_.assign(n, 0);
  recv_counts_.assign(n, 0);
  for (int p = 0; p < n; ++p)
    for (int64_t l = 0; l < L; ++l) {
      send_counts_[p] += send_le[p * L + l];
      recv_counts_[p] += recv_le[p * L + l];
    }
  // Received layout: block (q, l) starts at base[q * L + l] (source-rank major).
  std::vector<int64_t> base(n * L + 1, 0);
  for (int64_t i = 0; i < n * L; ++i) base[i + 1] = base[i] + recv_le[i];
  rows_ = base.back();
  segments_.clear();
  if (order_ == ExpertOrder::BySource) {
    for (int q = 0; q < n; ++q) {
      Segment seg{base[q * L], std::vector<int64_t>(L + 1)};
      for (int64_t l = 0; l <= L; ++l) seg.offsets[l] = base[q * L + l] - base[q * L];
      segments_.push_back(std::move(seg));
    }
  } else {
    // Local expert major, then source rank, keeping each block's internal order.
    Segment seg{0, std::vector<int64_t>(L + 1, 0)};
    std::vector<int32_t> reorder(rows_), inverse(rows_);
    int64_t j = 0;
    for (int64_t l = 0; l < L; ++l) {
      for (int q = 0; q < n; ++q)
        for (int64_t i = 0; i < recv_le[q * L + l]; ++i, ++j) {
          reorder[j] = int32_t(base[q * L + l] + i);
          inverse[reorder[j]] = int32_t(j);
        }
      seg.offsets[l + 1] = j;
    }
    segments_.push_back(std::move(seg));
    reorder_host_ = std::move(reorder);
    inverse_host_ = std::move(inverse);
  }

  const int64_t cap = std::max<int64_t>(rows_, 1);
  if (!scratch_.defined() || scratch_.dim(0) < cap || scratch_.dtype() != dt || scratch_.dim(1) != d_model) {
    scratch_ = reorder_ = inverse_ = Tensor();  // released before the larger ones are allocated
    MemScope scope(be, MemCategory::Workspace);
    scratch_ = be.empty({cap, d_model}, dt);
    reorder_ = be.empty({cap}, DType::I32);
    inverse_ = be.empty({cap}, DType::I32);
  }
  if (rows_ > 0 && order_ == ExpertOrder::ByExpert) {
    be.upload(reorder_host_.data(), reorder_.rows(0, rows_));
    be.upload(inverse_host_.data(), inverse_.rows(0, rows_));
  }
}

void ExpertDispatcher::dispatch(Backend& be, const Tensor& xp, const Tensor& xe) {
  if (order_ == ExpertOrder::BySource) {
    ex_.exchange_rows(xp, send_counts_, xe, recv_counts_);
    return;
  }
  const Tensor recv = scratch_.rows(0, rows_);
  ex_.exchange_rows(xp, send_counts_, recv, recv_counts_);
  if (rows_ > 0) be.gather_rows(recv, reorder_.rows(0, rows_), xe);
}

void ExpertDispatcher::combine(Backend& be, const Tensor& ye, const Tensor& yp) {
  if (order_ == ExpertOrder::BySource) {
    ex_.exchange_rows(ye, recv_counts_, yp, send_counts_);
    return;
  }
  const Tensor back = scratch_.rows(0, rows_);
  if (rows_ > 0) be.gather_rows(ye, inverse_.rows(0, rows_), back);
  ex_.exchange_rows(back, recv_counts_, yp, send_counts_);
}

int64_t ExpertDispatcher::rows_received_off_rank() const {
  int64_t s = 0;
  for (int p = 0; p < int(recv_counts_.size()); ++p)
    if (p != ex_.rank()) s += recv_counts_[p];
  return s;
}

int64_t ExpertDispatcher::rows_sent_off_rank() const {
  int64_t s = 0;
  for (int p = 0; p < int(send_counts_.size()); ++p)
    if (p != ex_.rank()) s += send_counts_[p];
  return s;
}

}  // namespace sy
