#include "trainer/buffer_comms.h"

#include "engine/config_error.h"
#include "parallel/nccl/nccl_factory.h"

namespace sy {

std::string resolve_comm(const Recipe& r, const std::string& device, int world) {
  const std::string& c = r.parallel.comm;
  const bool gpu = device.starts_with("cuda:"), emu = device == "cuda-emu";
  if (c == "auto") return gpu && world > 1 ? "nccl" : "mpi";
  if (c == "mpi") {
    if (gpu && world > 1)
      throw ConfigError("parallel.comm=\"mpi\" moves host memory, but engine.device=\"cuda\" keeps the buffers on the GPU; "
                        "set parallel.comm=\"nccl\" (or \"auto\")");
    return "mpi";
  }
  if (!gpu && !emu)
    throw ConfigError("parallel.comm=\"nccl\" moves device buffers, which engine.device=\"" + device +
                      "\" does not have; set engine.device=\"cuda\" (or \"cuda-emu\"), or parallel.comm=\"mpi\"");
  if (r.parallel.pp > 1)
    throw ConfigError("parallel.comm=\"nccl\" with parallel.pp=" + std::to_string(r.parallel.pp) +
                      " is not built (the pipeline's transfers pair by tag, which NCCL does not match); "
                      "use parallel.pp=1, or parallel.comm=\"mpi\" on engine.device=\"cuda-emu\"");
#if !SY_HAVE_NCCL_DEVICE
  if (gpu)
    throw ConfigError("parallel.comm=\"nccl\": this build has no NCCL (nccl.h and libnccl were not found next to the CUDA "
                      "toolkit when it was configured); install NCCL and rebuild, or run 1 rank per job");
#endif
  return "nccl";
}

namespace {
std::unique_ptr<Communicator> nccl_of(Communicator& host, const ChosenBackend& chosen) {
  if (host.size() == 1) return nullptr;
  void* stream = chosen.backend->native_stream();
#if SY_HAVE_NCCL_DEVICE
  if (chosen.device != "cuda-emu") return nccl::make_device_nccl_comm(host, chosen.gpu, stream);
#endif
  return nccl::make_emulated_nccl_comm(host, stream);
}
}  // namespace

BufferComms make_buffer_comms(const Recipe& r, RunContext& ctx, const ChosenBackend& chosen) {
  BufferComms b;
  b.kind = resolve_comm(r, chosen.device, ctx.world->size());
  if (b.kind != "nccl") return b;
  // The order RunContext made the host groups in, so that every rank meets its peers in it.
  b.dp = nccl_of(*ctx.dp, chosen);
  b.ep = nccl_of(*ctx.ep, chosen);
  b.edp = nccl_of(*ctx.edp, chosen);
  b.tp = nccl_of(*ctx.tp, chosen);
  b.etp = nccl_of(*ctx.etp, chosen);
  return b;
}

}  // namespace sy
