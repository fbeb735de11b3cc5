// The subset of the CUDA runtime API the project calls, for the host emulator. "Device" memory is
// host memory; every stream is the host thread, so a launch or a copy has finished when its call
// returns, and events and stream waits only check their arguments. Names, enum values and return
// conventions are the runtime's, so the code that calls them is the same in both builds.
//
// Fresh allocations are filled with 0xff bytes (NaN as float or bf16, -1 as int), as cudaMalloc's
// memory is uninitialised on a GPU: a kernel that reads what nobody wrote gets NaN here.
//
// One thing streams do model: work that never finishes. The emulated NCCL (emu_nccl.h) stalls the
// stream of a collective whose peers never arrived, as the GPU kernel would spin forever; events
// recorded there afterwards stay not ready (cudaEventQuery), streams that wait on them inherit the
// stall, and a synchronize that would hang on a GPU throws syemu::EmuError instead.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,  // not an error: the queried work has not finished (never the last error)
};

enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;

// Flags, with the runtime's values (macros there; constants here).
constexpr unsigned cudaStreamDefault = 0x0, cudaStreamNonBlocking = 0x1;
constexpr unsigned cudaEventDefault = 0x0, cudaEventBlockingSync = 0x1, cudaEventDisableTiming = 0x2;

const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();

cudaError_t cudaGetDeviceCount(int* count);  // 1: the emulated device
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceSynchronize();

cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);

cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned flags);
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned flags, int priority);
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest);  // 0 and -5, as on recent GPUs
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags);
cudaError_t cudaEventQuery(cudaEvent_t event);  // cudaSuccess, or cudaErrorNotReady behind a stall
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);

template <class T> cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}

namespace syemu {

// A stall: work queued on a stream that will not finish until end_stall (see the top of this file).
using StallHandle = std::shared_ptr<std::atomic<bool>>;
StallHandle stall_stream(cudaStream_t stream);
void end_stall(const StallHandle& stall);

// True when [p, p + bytes) lies inside one live cudaMalloc allocation (always for bytes == 0), so
// emulated libraries can refuse host pointers where the real ones need device memory.
bool is_device_memory(const void* p, size_t bytes);

}  // namespace syemu
