// The emulated CUDA runtime: host allocations stand in for device memory, and every stream is the
// calling thread (see emu_runtime.h).
#include "engine/cuda/emu/emu_runtime.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "engine/cuda/emu/cuda_emu.h"

// Distinct, non-null handles: code that creates streams and events and passes them around runs
// unchanged, and a null handle (the default stream) stays distinguishable. The only state is the
// stall a stream or an event is behind (null: none).
struct CUstream_st {
  syemu::StallHandle stall;
};
struct CUevent_st {
  bool recorded = false;
  syemu::StallHandle stall;
};

namespace {
thread_local cudaError_t t_last_error = cudaSuccess;
CUstream_st g_default_stream;    // the state of the null stream
std::atomic<int> g_active_stalls{0};

// Live allocations (start -> bytes), for is_device_memory.
std::mutex g_alloc_mutex;
std::map<uintptr_t, size_t> g_allocs;

CUstream_st& state(cudaStream_t s) { return s ? *s : g_default_stream; }

// A stall that has ended is dropped, so streams behind it run again.
bool stalled(syemu::StallHandle& h) {
  if (h && !h->load()) h.reset();
  return h != nullptr;
}

void throw_if_stalled(syemu::StallHandle& h, const char* call) {
  if (stalled(h))
    throw syemu::EmuError(std::string(call) + " on work that never finishes (an emulated NCCL operation whose peers did not "
                          "arrive): this would hang on a GPU; wait with a timeout and abort the communicator instead");
}

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}
}  // namespace

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
  }
  return "unknown error";
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
  }
  return "cudaErrorUnknown";
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return t_last_error; }

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return set_error(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : set_error(cudaErrorInvalidValue); }
cudaError_t cudaGetDevice(int* device) {
  if (!device) return set_error(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  if (g_active_stalls.load() > 0)
    throw syemu::EmuError("cudaDeviceSynchronize with a stream behind work that never finishes (an emulated NCCL operation "
                          "whose peers did not arrive): this would hang on a GPU");
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return set_error(cudaErrorInvalidValue);
  // 256-byte alignment, as cudaMalloc guarantees; 0xff bytes for the uninitialised contents.
  const size_t padded = (bytes + 255) / 256 * 256 + 256;
  void* p = std::aligned_alloc(256, padded);
  if (!p) return set_error(cudaErrorMemoryAllocation);
  std::memset(p, 0xff, padded);
  *ptr = p;
  const std::lock_guard lock(g_alloc_mutex);
  g_allocs[reinterpret_cast<uintptr_t>(p)] = bytes;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  {
    const std::lock_guard lock(g_alloc_mutex);
    g_allocs.erase(reinterpret_cast<uintptr_t>(ptr));
  }
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes && (!dst || !src)) return set_error(cudaErrorInvalidValue);
  if (int(kind) < 0 || int(kind) > 4) return set_error(cudaErrorInvalidValue);
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (bytes && !ptr) return set_error(cudaErrorInvalidValue);
  if (bytes) std::memset(ptr, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) { return cudaMemset(ptr, value, bytes); }

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  if (!stream) return set_error(cudaErrorInvalidValue);
  *stream = new CUstream_st{};
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags) {
  return flags > cudaStreamNonBlocking ? set_error(cudaErrorInvalidValue) : cudaStreamCreate(stream);
}
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned flags, int) {
  return cudaStreamCreateWithFlags(stream, flags);  // priorities only matter to a real scheduler
}
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  throw_if_stalled(state(stream).stall, "cudaStreamSynchronize");
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  if (!event) return set_error(cudaErrorInvalidResourceHandle);
  if (stalled(event->stall)) state(stream).stall = event->stall;  // its later work waits behind the stall too
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  if (!event) return set_error(cudaErrorInvalidValue);
  *event = new CUevent_st{};
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  return flags > (cudaEventBlockingSync | cudaEventDisableTiming) ? set_error(cudaErrorInvalidValue) : cudaEventCreate(event);
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return set_error(cudaErrorInvalidResourceHandle);
  event->recorded = true;
  CUstream_st& s = state(stream);
  event->stall = stalled(s.stall) ? s.stall : nullptr;
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (!event) return set_error(cudaErrorInvalidResourceHandle);
  return stalled(event->stall) ? cudaErrorNotReady : cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return set_error(cudaErrorInvalidResourceHandle);
  throw_if_stalled(event->stall, "cudaEventSynchronize");
  return cudaSuccess;
}

namespace syemu {

StallHandle stall_stream(cudaStream_t stream) {
  auto h = std::make_shared<std::atomic<bool>>(true);
  state(stream).stall = h;
  ++g_active_stalls;
  return h;
}

void end_stall(const StallHandle& stall) {
  if (stall && stall->exchange(false)) --g_active_stalls;
}

bool is_device_memory(const void* p, size_t bytes) {
  if (bytes == 0) return true;
  const auto a = reinterpret_cast<uintptr_t>(p);
  const std::lock_guard lock(g_alloc_mutex);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return false;
  --it;
  return a + bytes <= it->first + it->second;
}

}  // namespace syemu
