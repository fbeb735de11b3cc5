#include "parallel/token_exchange_comm.h"

#include <chrono>
#include <stdexcept>

namespace sy {

namespace {
// Adds the wall time of its scope to a counter.
struct ScopedTimer {
  double& total;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  ~ScopedTimer() { total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
};
}  // namespace

std::vector<int64_t> CommTokenExchange::exchange_counts(const std::vector<int64_t>& send, int64_t per_rank) {
  ScopedTimer timer{seconds_};
  const int n = comm_.size();
  if (int64_t(send.size()) != n * per_rank) throw std::invalid_argument("exchange_counts: send size");
  std::vector<int64_t> recv(send.size());
  const std::vector<int64_t> counts(n, per_rank);
  comm_.all_to_all_v(send.data(), counts, recv.data(), counts, CommType::I64);
  return recv;
}

void CommTokenExchange::exchange_rows(const Tensor& send_rows, std::span<const int64_t> send_counts,
                                      const Tensor& recv_rows, std::span<const int64_t> recv_counts) {
  // The MPI communicator reads the tensors' storage directly (host memory, which the CPU backend
  // and the emulator use); on a GPU rows_ is the NCCL communicator.
  ScopedTimer timer{seconds_};
  const int64_t d = send_rows.dim(1);
  std::vector<int64_t> se(send_counts.begin(), send_counts.end()), re(recv_counts.begin(), recv_counts.end());
  int64_t st = 0, rt = 0;
  for (auto& c : se) st += (c *= d);
  for (auto& c : re) rt += (c *= d);
  if (st != send_rows.numel() || rt != recv_rows.numel())
    throw std::invalid_argument("exchange_rows: counts do not match the row buffers");
  rows_.all_to_all_v(send_rows.raw(), se, recv_rows.raw(), re, comm_type_of(send_rows.dtype()));
}

}  // namespace sy
