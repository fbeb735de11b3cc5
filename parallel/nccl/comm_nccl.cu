// NcclComm: the Communicator over NCCL on device buffers (comm_nccl.h); set-up, teardown, waiting
// and subgroups here, the operations in comm_nccl_ops.cu. Host code only, but .cu files so they are
// compiled like the kernels: by nvcc against CUDA and NCCL (library sy_parallel_nccl), and by g++
// against the emulator (sy_parallel_nccl_emu, which the multi-rank tests run; there the emulated
// NCCL moves the data through a transport over the bootstrap communicator).
#include "parallel/nccl/comm_nccl_impl.h"
#include "parallel/nccl/nccl_factory.h"

#if SY_CUDA_EMULATED
#include "parallel/nccl/emu_transport.h"
#endif

namespace sy::nccl {
SY_CUDA_NS_BEGIN
namespace detail {

void NcclCommImpl::init() {
  SY_CUDA_CHECK(cudaSetDevice(device_));
  const auto deadline = deadline_after(timeout_s_);
  // Rank 0 makes the id, the bootstrap (host memory, its own timeout) carries it to everyone.
  ncclUniqueId id{};
  if (rank() == 0) SY_NCCL_CHECK(ncclGetUniqueId(&id));
  static_assert(sizeof id.internal % 8 == 0);
  boot_->set_timeout_s(timeout_s_);
  boot_->broadcast(id.internal, sizeof id.internal / 8, CommType::I64, 0);
#if SY_CUDA_EMULATED
  std::vector<int> everyone(size());
  for (int i = 0; i < size(); ++i) everyone[i] = i;
  syemu::nccl_bind_transport(id, std::make_unique<CommTransport>(boot_->subgroup(everyone, name_), *this));
#endif
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every call returns at once: a rank that never arrives cannot hang this one
  settle(SY_NCCL_CHECK(ncclCommInitRankConfig(&comm_, size(), id, rank(), &config)), "creating NCCL " + group(),
         "not every rank took part", deadline);
  // Non-blocking: no implicit synchronisation with the legacy default stream, which would serialise
  // communication and compute. Highest priority: its kernels get SMs as soon as they free up.
  int least = 0, greatest = 0;
  SY_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  SY_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, greatest));
  SY_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  SY_CUDA_CHECK(cudaMalloc(&scratch_, sizeof(int32_t)));
  SY_CUDA_CHECK(cudaMemset(scratch_, 0, sizeof(int32_t)));
}

NcclCommImpl::~NcclCommImpl() {
  if (comm_ && !broken_) {
    // Finalize completes what was issued (collectively with the peers), bounded by the timeout;
    // destroying without it could block forever, so past the deadline the communicator is aborted.
    bool clean = false;
    const auto deadline = deadline_after(timeout_s_);
    ncclResult_t r = ncclCommFinalize(comm_);
    for (Backoff b; r == ncclSuccess || r == ncclInProgress; b.pause()) {
      ncclResult_t state = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess || (state != ncclSuccess && state != ncclInProgress)) break;
      if (state == ncclSuccess) {
        clean = true;
        break;
      }
      if (Clock::now() >= deadline) break;
    }
    if (clean)
      ncclCommDestroy(comm_);
    else
      ncclCommAbort(comm_);
  }
  for (auto& [id, p] : pending_)
    if (p.done) cudaEventDestroy(p.done);
  for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
  if (ready_) cudaEventDestroy(ready_);
  if (stream_) cudaStreamDestroy(stream_);
  if (scratch_) cudaFree(scratch_);
}

void NcclCommImpl::fail(const std::string& message, bool timed_out) {
  std::string m = message;
#if SY_CUDA_EMULATED
  // The emulated NCCL knows which transport operation hung and why (it names the missing rank);
  // the real library's last error may be unrelated to this operation, so it is left out there.
  const char* last = comm_ ? ncclGetLastError(comm_) : nullptr;
  if (timed_out && last && *last) m += "; " + std::string(last);
#endif
  broken_ = true;
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
  if (timed_out) throw CommTimeout(m);
  throw std::runtime_error(m);
}

void NcclCommImpl::settle(ncclResult_t r, const std::string& what, const std::string& why, Clock::time_point deadline) {
  for (Backoff b; r == ncclInProgress; b.pause()) {
    SY_NCCL_CHECK(ncclCommGetAsyncError(comm_, &r));
    if (r != ncclSuccess && r != ncclInProgress)
      fail(what + ": NCCL failed: " + ncclGetErrorString(r) + " (" + ncclGetLastError(comm_) + ")", false);
    if (r == ncclInProgress && Clock::now() >= deadline)
      fail(what + " timed out after " + seconds(timeout_s_) + " s: " + why, true);
  }
}

bool NcclCommImpl::done(cudaEvent_t e, const std::string& what) {
  ncclResult_t state = ncclSuccess;
  SY_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
  if (state != ncclSuccess && state != ncclInProgress)
    fail(what + ": NCCL failed: " + ncclGetErrorString(state) + " (" + ncclGetLastError(comm_) + ")", false);
  const cudaError_t q = cudaEventQuery(e);
  if (q == cudaSuccess) return true;
  if (q != cudaErrorNotReady) SY_CUDA_CHECK(q);
  (void)cudaGetLastError();  // "not ready" is no error: it must not linger for the next launch check
  return false;
}

cudaEvent_t NcclCommImpl::record() {
  cudaEvent_t e = nullptr;
  if (free_events_.empty()) {
    SY_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  } else {
    e = free_events_.back();
    free_events_.pop_back();
  }
  SY_CUDA_CHECK(cudaEventRecord(e, stream_));
  return e;
}

void NcclCommImpl::flush(Clock::time_point deadline, const std::string& what, const std::string& why) {
  if (queued_.empty()) return;
  std::vector<int64_t> ids;
  ids.swap(queued_);
  order_after_compute();
  // One group: NCCL runs its transfers concurrently, so the pairs in it cannot wait on each other.
  SY_NCCL_CHECK(ncclGroupStart());
  try {
    for (int64_t id : ids) {
      const Pending& p = pending_.at(id);
      if (p.count == 0) continue;  // both sides skip an empty transfer (their counts agree)
      if (p.is_send)
        SY_NCCL_CHECK(ncclSend(p.buf, p.count, p.type, p.peer, comm_, stream_));
      else
        SY_NCCL_CHECK(ncclRecv(p.buf, p.count, p.type, p.peer, comm_, stream_));
    }
  } catch (...) {
    ncclGroupEnd();  // a group left open would swallow every later NCCL call of this thread
    throw;
  }
  settle(SY_NCCL_CHECK(ncclGroupEnd()), what, why, deadline);
  for (int64_t id : ids) pending_.at(id).done = record();
}

void NcclCommImpl::wait_until(CommRequest& r, Clock::time_point deadline) {
  auto it = pending_.find(r.id);
  if (it == pending_.end()) throw std::invalid_argument("wait on " + group() + ": unknown or already completed request");
  check_usable(it->second.op);
  const Observed watched(observer_, it->second.op, name_);
  if (!it->second.done) flush(deadline, what(it->second), why(it->second));  // starts now, with the rest of the queue
  const Pending p = it->second;
  pending_.erase(it);
  r.id = -1;
  for (Backoff b; !done(p.done, what(p)); b.pause()) {
    if (Clock::now() < deadline) continue;
    free_events_.push_back(p.done);
    fail(what(p) + " timed out after " + seconds(timeout_s_) + " s: " + why(p), true);
  }
  free_events_.push_back(p.done);
}

void NcclCommImpl::stream_wait(const CommRequest& r, cudaStream_t s) {
  auto it = pending_.find(r.id);
  if (it == pending_.end()) throw std::invalid_argument("stream_wait on " + group() + ": unknown or already completed request");
  check_usable(it->second.op);
  if (!it->second.done) flush(deadline_after(timeout_s_), what(it->second), why(it->second));
  SY_CUDA_CHECK(cudaStreamWaitEvent(s, it->second.done, 0));
}

bool NcclCommImpl::test(const CommRequest& r) {
  auto it = pending_.find(r.id);
  if (it == pending_.end()) throw std::invalid_argument("test on " + group() + ": unknown or already completed request");
  check_usable(it->second.op);
  if (!it->second.done) flush(deadline_after(timeout_s_), what(it->second), why(it->second));
  return done(it->second.done, what(it->second));
}

std::unique_ptr<NcclComm> NcclCommImpl::nccl_subgroup(const std::vector<int>& members, const std::string& name) {
  check_usable("subgroup");
  // Not ncclCommSplit: that is collective over the whole parent, while subgroup() is collective
  // over the members only. The bootstrap's subgroup (checked, with the timeout) carries a new id.
  boot_->set_timeout_s(timeout_s_);
  auto c = std::make_unique<NcclCommImpl>(boot_->subgroup(members, name), device_, compute_, timeout_s_);
  c->init();
  return c;
}

}  // namespace detail

std::unique_ptr<NcclComm> make_nccl_comm(Communicator& bootstrap, const NcclOptions& options) {
  std::vector<int> everyone(bootstrap.size());
  for (int i = 0; i < bootstrap.size(); ++i) everyone[i] = i;
  const int device = detail::pick_device(options.device);
  auto c = std::make_unique<detail::NcclCommImpl>(bootstrap.subgroup(everyone, bootstrap.name()), device, options.compute,
                                                  bootstrap.timeout_s());
  c->init();
  return c;
}

SY_CUDA_NS_END

#if SY_CUDA_EMULATED
std::unique_ptr<Communicator> make_emulated_nccl_comm(Communicator& bootstrap, void* compute_stream) {
  return make_nccl_comm(bootstrap, {0, static_cast<cudaStream_t>(compute_stream)});
}
#else
std::unique_ptr<Communicator> make_device_nccl_comm(Communicator& bootstrap, int gpu, void* compute_stream) {
  return make_nccl_comm(bootstrap, {gpu, static_cast<cudaStream_t>(compute_stream)});
}
#endif
}  // namespace sy::nccl
