// NCCL on the host over a registered transport (see emu_nccl.h for what is and is not modelled).
#include "engine/cuda/emu/emu_nccl.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

struct ncclComm {
  std::unique_ptr<syemu::NcclTransport> transport;
  int rank = 0, nranks = 1;
  bool blocking = true;
  bool settling = false;    // the last call returned ncclInProgress; the state says so once more
  bool finalizing = false;  // ncclCommFinalize was called
  std::string last_error;
  std::vector<syemu::StallHandle> stalls;  // streams left behind an operation that never completes
};

namespace {

using syemu::NcclTransport;

constexpr char kMagic[8] = {'s', 'y', 'e', 'm', 'u', 'n', 'c', '1'};

std::mutex g_mutex;
std::map<uint64_t, std::unique_ptr<NcclTransport>> g_bound;  // bound by the bootstrap, not yet taken by init
thread_local std::string t_last_error;

struct Grouped {
  ncclComm_t comm;
  NcclTransport::P2p op;
  cudaStream_t stream;
};
thread_local int t_group_depth = 0;
thread_local std::vector<Grouped> t_group;

ncclResult_t fail(ncclComm_t comm, ncclResult_t r, const std::string& call, const std::string& what) {
  t_last_error = "emulated NCCL: " + call + ": " + what;
  if (comm) comm->last_error = t_last_error;
  return r;
}

bool id_key(const ncclUniqueId& id, uint64_t* key) {
  if (std::memcmp(id.internal, kMagic, sizeof kMagic) != 0) return false;
  std::memcpy(key, id.internal + sizeof kMagic, sizeof *key);
  return true;
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt32: return 4;
    case ncclInt64: return 8;
    case ncclFloat32: return 4;
    case ncclFloat64: return 8;
    case ncclBfloat16: return 2;  // moved only: check_op refuses its reductions
    default: return 0;  // not emulated
  }
}

// The checks every call on an existing communicator starts with; 0 (ncclSuccess) to go on.
ncclResult_t usable(ncclComm_t comm, const char* call) {
  if (!comm) return fail(nullptr, ncclInvalidArgument, call, "null communicator");
  if (comm->settling)
    return fail(comm, ncclInvalidUsage, call,
                "called while the previous call on this nonblocking communicator is still in progress "
                "(poll ncclCommGetAsyncError until it is no longer ncclInProgress first)");
  return ncclSuccess;
}

ncclResult_t check_type(ncclComm_t comm, const char* call, ncclDataType_t t) {
  return type_size(t) ? ncclSuccess : fail(comm, ncclInvalidArgument, call, "data type " + std::to_string(t) + " is not emulated");
}

ncclResult_t check_op(ncclComm_t comm, const char* call, ncclDataType_t t, ncclRedOp_t op) {
  if (auto r = check_type(comm, call, t)) return r;
  if (t == ncclBfloat16) return fail(comm, ncclInvalidArgument, call, "bfloat16 reductions are not emulated");
  if (op == ncclSum || op == ncclMax || (op == ncclAvg && (t == ncclFloat32 || t == ncclFloat64))) return ncclSuccess;
  return fail(comm, ncclInvalidArgument, call, "reduction " + std::to_string(op) + " on type " + std::to_string(t) + " is not emulated");
}

ncclResult_t check_memory(ncclComm_t comm, const char* call, const char* what, const void* p, size_t bytes) {
  if (syemu::is_device_memory(p, bytes)) return ncclSuccess;
  return fail(comm, ncclInvalidArgument, call,
              std::string(what) + " (" + std::to_string(bytes) + " bytes) is not device memory (cudaMalloc)");
}

ncclResult_t not_in_group(ncclComm_t comm, const char* call) {
  return t_group_depth ? fail(comm, ncclInvalidUsage, call, "collectives inside ncclGroupStart/End are not emulated") : ncclSuccess;
}

bool overlap(const void* a, size_t an, const void* b, size_t bn) {
  const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return x < y + bn && y < x + an;
}

// An operation has been "enqueued": a nonblocking communicator reports it in progress.
ncclResult_t started(ncclComm_t comm) {
  if (comm->blocking) return ncclSuccess;
  comm->settling = true;
  return ncclInProgress;
}

// Runs an operation on the transport. Peers that never arrive leave its streams stalled, as a
// GPU kernel would spin; an operation queued behind such a one never runs either.
template <class F>
ncclResult_t run(ncclComm_t comm, const char* call, const std::vector<cudaStream_t>& streams, F&& body) {
  bool hung = !comm->stalls.empty();
  if (!hung) {
    try {
      body();
    } catch (const syemu::NcclHang& e) {
      hung = true;
      t_last_error = comm->last_error = std::string("emulated NCCL: ") + call + " never completes: " + e.what();
    } catch (const std::invalid_argument& e) {
      return fail(comm, ncclInvalidArgument, call, e.what());
    } catch (const std::length_error& e) {
      return fail(comm, ncclInvalidArgument, call, e.what());
    } catch (const std::exception& e) {
      return fail(comm, ncclSystemError, call, e.what());
    }
  }
  if (hung)
    for (cudaStream_t s : streams) comm->stalls.push_back(syemu::stall_stream(s));
  return started(comm);
}

}  // namespace

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
  }
  return "unknown result code";
}

const char* ncclGetLastError(ncclComm_t comm) { return comm ? comm->last_error.c_str() : t_last_error.c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return fail(nullptr, ncclInvalidArgument, "ncclGetUniqueId", "null id");
  static std::mutex m;
  static std::mt19937_64 gen(std::random_device{}());
  uint64_t key = 0;
  {
    const std::lock_guard lock(m);
    while (key == 0) key = gen();
  }
  std::memset(id->internal, 0, sizeof id->internal);
  std::memcpy(id->internal, kMagic, sizeof kMagic);
  std::memcpy(id->internal + sizeof kMagic, &key, sizeof key);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank, ncclConfig_t* config) {
  const char* call = "ncclCommInitRankConfig";
  if (!comm) return fail(nullptr, ncclInvalidArgument, call, "null communicator pointer");
  uint64_t key = 0;
  if (!id_key(id, &key)) return fail(nullptr, ncclInvalidArgument, call, "the unique id was not made by ncclGetUniqueId");
  std::unique_ptr<NcclTransport> t;
  {
    const std::lock_guard lock(g_mutex);
    auto it = g_bound.find(key);
    if (it != g_bound.end()) {
      t = std::move(it->second);
      g_bound.erase(it);
    }
  }
  if (!t)
    return fail(nullptr, ncclInvalidUsage, call,
                "no transport is bound to this unique id in this process (call syemu::nccl_bind_transport first)");
  if (t->size() != nranks || t->rank() != rank || rank < 0 || rank >= nranks)
    return fail(nullptr, ncclInvalidArgument, call,
                "rank " + std::to_string(rank) + " of " + std::to_string(nranks) + " does not match the transport (rank " +
                    std::to_string(t->rank()) + " of " + std::to_string(t->size()) + ")");
  auto* c = new ncclComm;
  c->transport = std::move(t);
  c->rank = rank;
  c->nranks = nranks;
  c->blocking = !(config && config->blocking == 0);
  *comm = c;
  return started(c);
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
  if (auto r = usable(comm, "ncclCommFinalize")) return r;
  comm->finalizing = true;
  return started(comm);
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return fail(nullptr, ncclInvalidArgument, "ncclCommDestroy", "null communicator");
  for (const auto& s : comm->stalls) syemu::end_stall(s);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  for (const auto& s : comm->stalls) syemu::end_stall(s);  // the spinning kernels exit
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (!comm || !async_error) return fail(comm, ncclInvalidArgument, "ncclCommGetAsyncError", "null argument");
  *async_error = ncclSuccess;
  // Finalizing waits for every operation, so behind one that never completes it never settles.
  if (comm->settling || (comm->finalizing && !comm->stalls.empty())) *async_error = ncclInProgress;
  comm->settling = false;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  const char* call = "ncclAllReduce";
  if (auto r = usable(comm, call)) return r;
  if (auto r = not_in_group(comm, call)) return r;
  if (auto r = check_op(comm, call, type, op)) return r;
  const size_t bytes = count * type_size(type);
  if (auto r = check_memory(comm, call, "sendbuff", send, bytes)) return r;
  if (auto r = check_memory(comm, call, "recvbuff", recv, bytes)) return r;
  return run(comm, call, {stream}, [&] {
    if (send != recv) std::memmove(recv, send, bytes);
    comm->transport->all_reduce(recv, count, type, op);
  });
}

ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recv_count, ncclDataType_t type, ncclRedOp_t op,
                               ncclComm_t comm, cudaStream_t stream) {
  const char* call = "ncclReduceScatter";
  if (auto r = usable(comm, call)) return r;
  if (auto r = not_in_group(comm, call)) return r;
  if (auto r = check_op(comm, call, type, op)) return r;
  const size_t bytes = recv_count * type_size(type), all = bytes * comm->nranks;
  if (auto r = check_memory(comm, call, "sendbuff", send, all)) return r;
  if (auto r = check_memory(comm, call, "recvbuff", recv, bytes)) return r;
  return run(comm, call, {stream}, [&] {
    // In place (recv inside send) the transport, which takes no aliasing, reads a copy.
    std::vector<char> copy;
    const void* s = send;
    if (bytes && overlap(send, all, recv, bytes)) {
      copy.assign(static_cast<const char*>(send), static_cast<const char*>(send) + all);
      s = copy.data();
    }
    comm->transport->reduce_scatter(s, recv, recv_count, type, op);
  });
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t send_count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
  const char* call = "ncclAllGather";
  if (auto r = usable(comm, call)) return r;
  if (auto r = not_in_group(comm, call)) return r;
  if (auto r = check_type(comm, call, type)) return r;
  const size_t bytes = send_count * type_size(type), all = bytes * comm->nranks;
  if (auto r = check_memory(comm, call, "sendbuff", send, bytes)) return r;
  if (auto r = check_memory(comm, call, "recvbuff", recv, all)) return r;
  return run(comm, call, {stream}, [&] {
    std::vector<char> copy;
    const void* s = send;
    const bool in_place = send == static_cast<const char*>(recv) + comm->rank * bytes;
    if (bytes && !in_place && overlap(send, bytes, recv, all)) {
      copy.assign(static_cast<const char*>(send), static_cast<const char*>(send) + bytes);
      s = copy.data();
    }
    comm->transport->all_gather(s, recv, send_count, type);
  });
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type, int root, ncclComm_t comm,
                           cudaStream_t stream) {
  const char* call = "ncclBroadcast";
  if (auto r = usable(comm, call)) return r;
  if (auto r = not_in_group(comm, call)) return r;
  if (auto r = check_type(comm, call, type)) return r;
  if (root < 0 || root >= comm->nranks) return fail(comm, ncclInvalidArgument, call, "root " + std::to_string(root) + " out of range");
  const size_t bytes = count * type_size(type);
  if (comm->rank == root)
    if (auto r = check_memory(comm, call, "sendbuff", send, bytes)) return r;
  if (auto r = check_memory(comm, call, "recvbuff", recv, bytes)) return r;
  return run(comm, call, {stream}, [&] {
    if (comm->rank == root && send != recv) std::memmove(recv, send, bytes);
    comm->transport->broadcast(recv, count, type, root);
  });
}

namespace {

ncclResult_t p2p(bool is_send, const char* call, void* buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                 cudaStream_t stream) {
  if (auto r = usable(comm, call)) return r;
  if (auto r = check_type(comm, call, type)) return r;
  if (peer < 0 || peer >= comm->nranks) return fail(comm, ncclInvalidArgument, call, "peer " + std::to_string(peer) + " out of range");
  if (auto r = check_memory(comm, call, is_send ? "sendbuff" : "recvbuff", buf, count * type_size(type))) return r;
  const NcclTransport::P2p op{is_send, buf, count, type, peer};
  if (t_group_depth) {  // started at ncclGroupEnd, with the rest of the group
    t_group.push_back({comm, op, stream});
    return ncclSuccess;
  }
  return run(comm, call, {stream}, [&] { comm->transport->exchange({&op, 1}); });
}

}  // namespace

ncclResult_t ncclSend(const void* send, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t stream) {
  return p2p(true, "ncclSend", const_cast<void*>(send), count, type, peer, comm, stream);
}

ncclResult_t ncclRecv(void* recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t stream) {
  return p2p(false, "ncclRecv", recv, count, type, peer, comm, stream);
}

ncclResult_t ncclGroupStart() {
  ++t_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (t_group_depth == 0) return fail(nullptr, ncclInvalidUsage, "ncclGroupEnd", "without ncclGroupStart");
  if (--t_group_depth > 0) return ncclSuccess;  // nested: the outermost end starts the group
  std::vector<Grouped> group;
  group.swap(t_group);
  // Each communicator's operations run as one exchange, communicators in order of first use.
  std::vector<ncclComm_t> comms;
  for (const Grouped& g : group)
    if (std::find(comms.begin(), comms.end(), g.comm) == comms.end()) comms.push_back(g.comm);
  ncclResult_t result = ncclSuccess;
  for (ncclComm_t c : comms) {
    std::vector<NcclTransport::P2p> ops;
    std::vector<cudaStream_t> streams;
    for (const Grouped& g : group)
      if (g.comm == c) {
        ops.push_back(g.op);
        if (std::find(streams.begin(), streams.end(), g.stream) == streams.end()) streams.push_back(g.stream);
      }
    const ncclResult_t r = run(c, "ncclGroupEnd", streams, [&] { c->transport->exchange(ops); });
    if (r != ncclSuccess && (result == ncclSuccess || result == ncclInProgress)) result = r;
  }
  return result;
}

namespace syemu {

void nccl_bind_transport(const ncclUniqueId& id, std::unique_ptr<NcclTransport> transport) {
  uint64_t key = 0;
  if (!id_key(id, &key)) throw std::invalid_argument("nccl_bind_transport: the unique id was not made by ncclGetUniqueId");
  const std::lock_guard lock(g_mutex);
  g_bound[key] = std::move(transport);
}

}  // namespace syemu
