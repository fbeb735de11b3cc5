// The subset of NCCL (nccl.h) that parallel/nccl/ calls, for the host emulator: names, enum
// values and return conventions are the library's, so the NCCL communicator is the same code in
// both builds. parallel/nccl/nccl_compat.h picks this header or <nccl.h>.
//
// The data moves through a transport: a host communicator of the same ranks (in this project the
// MPI one), which the bootstrap registers under the unique id before ncclCommInitRank. The emulated
// ncclGetUniqueId makes an id that names such a registration (a random key), so every rank that
// received the id finds its own process's transport under it. engine/ knows nothing of parallel/:
// the transport is an interface here, implemented over sy::Communicator in parallel/nccl/.
//
// What it models:
//  * every collective and point-to-point call runs at once on the calling thread, like the
//    emulated streams (the stream argument orders nothing: there is no asynchrony);
//  * ncclGroupStart/End batch the point-to-point calls of the group: at ncclGroupEnd every
//    receive and send of the group is posted before any is waited for, so the pairs of one group
//    (an all-to-all, a ring exchange) never wait on each other, as in NCCL;
//  * sends and receives between two ranks pair in the order they are posted (NCCL has no tags);
//  * nonblocking communicators (ncclConfig_t::blocking = 0): init, ncclGroupEnd, ungrouped
//    collectives and finalize return ncclInProgress, and ncclCommGetAsyncError says ncclInProgress
//    once more before ncclSuccess; any other call on the communicator before that is
//    ncclInvalidUsage (the library requires the caller to wait for the state to settle);
//  * an operation whose peers never arrive (the transport's timeout): the call returns as if
//    enqueued, its stream is stalled (emu_runtime.h: events recorded behind it never complete, as
//    behind a spinning kernel), later operations on the communicator queue behind it and never
//    run, and ncclGetLastError holds the transport's message; ncclCommAbort ends the stalls;
//  * buffers must be cudaMalloc'd memory (ncclInvalidArgument otherwise), in-place forms as NCCL
//    defines them (all-reduce and broadcast: send == recv; all-gather: send == recv + rank * count;
//    reduce-scatter: recv == send + rank * count);
//  * types float32, float64, int32, int64; ops sum, max, avg (floating point only).
// What it does not model: asynchrony (a collective has finished when its call returns, so a
// missing stream wait is invisible), collectives inside a group (ncclInvalidUsage), the other
// types and ops, communicator splitting, and performance of any kind.
#pragma once

#include <climits>
#include <cstddef>
#include <memory>
#include <span>
#include <stdexcept>

#include "engine/cuda/emu/emu_runtime.h"

#define NCCL_UNIQUE_ID_BYTES 128
struct ncclUniqueId {
  char internal[NCCL_UNIQUE_ID_BYTES];
};

struct ncclComm;
using ncclComm_t = ncclComm*;

enum ncclResult_t : int {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7,
};
enum ncclRedOp_t : int { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4 };
enum ncclDataType_t : int {
  ncclInt8 = 0,
  ncclUint8 = 1,
  ncclInt32 = 2,
  ncclUint32 = 3,
  ncclInt64 = 4,
  ncclUint64 = 5,
  ncclFloat16 = 6,
  ncclFloat32 = 7,
  ncclFloat64 = 8,
  ncclBfloat16 = 9,
};

// The fields the project sets; NCCL_CONFIG_INITIALIZER leaves the rest at their defaults as there.
struct ncclConfig_t {
  size_t size;
  unsigned magic;
  unsigned version;
  int blocking;
};
#define NCCL_CONFIG_UNDEF_INT INT_MIN
#define NCCL_CONFIG_INITIALIZER {sizeof(ncclConfig_t), 0xcafebeef, 0, NCCL_CONFIG_UNDEF_INT}

const char* ncclGetErrorString(ncclResult_t result);
// The last error message of comm, or of the process when comm is null.
const char* ncclGetLastError(ncclComm_t comm);
ncclResult_t ncclGetUniqueId(ncclUniqueId* id);
ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t* config);
ncclResult_t ncclCommFinalize(ncclComm_t comm);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error);

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recv_count, ncclDataType_t type, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclAllGather(const void* send, void* recv, size_t send_count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream);
ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type, int root, ncclComm_t comm,
                           cudaStream_t stream);
ncclResult_t ncclSend(const void* send, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclRecv(void* recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclGroupStart();
ncclResult_t ncclGroupEnd();

namespace syemu {

// Thrown by a transport whose peers did not arrive within its timeout: the emulated operation
// then never completes (above). Any other exception is an error the call returns.
struct NcclHang : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What an emulated communicator moves its data through: a host communicator of the same ranks in
// the same order, with the semantics of sy::Communicator (parallel/comm.h) on host-addressable
// buffers. Buffers never alias except as noted.
class NcclTransport {
 public:
  struct P2p {
    bool is_send;
    void* buf;
    size_t count;
    ncclDataType_t type;
    int peer;
  };
  virtual ~NcclTransport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual void all_reduce(void* buf, size_t count, ncclDataType_t type, ncclRedOp_t op) = 0;  // in place
  virtual void reduce_scatter(const void* send, void* recv, size_t recv_count, ncclDataType_t type, ncclRedOp_t op) = 0;
  // send may be recv + rank * count (in place).
  virtual void all_gather(const void* send, void* recv, size_t count, ncclDataType_t type) = 0;
  virtual void broadcast(void* buf, size_t count, ncclDataType_t type, int root) = 0;
  // One group's point-to-point operations: all posted, then all completed; between two ranks
  // they pair in order.
  virtual void exchange(std::span<const P2p> ops) = 0;
};

// Registers this process's transport for the communicator that ncclCommInitRankConfig will create
// from id; that call takes it over (and checks its size and rank against nranks and rank).
void nccl_bind_transport(const ncclUniqueId& id, std::unique_ptr<NcclTransport> transport);

}  // namespace syemu
