#include "trainer/run_context.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <thread>
#include <tuple>

#include "engine/config_error.h"
#include "parallel/comm_mpi.h"
#include "trainer/pipeline_training.h"

namespace sy {

RunContext::~RunContext() {
  const bool mpi = env.world > 1 && world;
  etp.reset();
  edp.reset();
  ep.reset();
  embed.reset();
  pp.reset();
  tp.reset();
  dp.reset();
  world.reset();
  if (mpi) mpi_finalize_if_initialised();
}

void check_layout(const Recipe& r, int world) {
  const ParallelConfig& p = r.parallel;
  // Until context parallelism lands, refuse it up front rather than training something else than
  // what the recipe asks for.
  if (p.cp != 1)
    throw ConfigError("parallel.cp=" + std::to_string(p.cp) +
                      " is not supported yet (data, tensor, expert and pipeline parallelism only); set parallel.cp=1");
  const ModelConfig& m = r.model;
  if (!p.pp_layers.empty() && p.pp == 1)
    throw ConfigError("parallel.pp_layers is set but parallel.pp=1; remove it or set parallel.pp");
  if (p.pp > 1 || p.vpp > 1) {
    if (p.pp == 1) throw ConfigError("parallel.vpp=" + std::to_string(p.vpp) + " needs parallel.pp > 1; set parallel.vpp=1");
    if (m.n_layers < p.pp * p.vpp)
      throw ConfigError("model.n_layers=" + std::to_string(m.n_layers) + " cannot fill parallel.pp * parallel.vpp = " +
                        std::to_string(p.pp * p.vpp) + " pipeline chunks; lower pp or vpp");
    if (p.vpp > 1 && r.train.grad_accum % p.pp != 0)
      throw ConfigError("interleaved 1F1B (parallel.vpp=" + std::to_string(p.vpp) + ") needs train.grad_accum (" +
                        std::to_string(r.train.grad_accum) + ", the micro-batches per step) divisible by parallel.pp=" +
                        std::to_string(p.pp) + "; change grad_accum or set vpp=1");
    pipeline_place(m.n_layers, int(p.pp), int(p.vpp), 0, p.pp_layers);  // the split's own checks
    if (r.train.grad_accum * p.pp * p.vpp > 64 * 64)
      throw ConfigError("train.grad_accum * parallel.pp * parallel.vpp exceeds 4096; fewer micro-batches or stages");
  }
  const std::pair<const char*, int64_t> split_by_tp[] = {
      {"vocab_size", m.vocab_size}, {"n_heads", m.n_heads}, {"n_kv_heads", m.n_kv_heads},
      {"d_ff", m.first_dense_layers > 0 || m.n_experts == 0 ? m.d_ff : p.tp},
      {"expert_ffn_dim", m.n_shared_experts > 0 ? m.expert_ffn_dim : p.tp}};
  if (p.tp < 1) throw ConfigError("parallel.tp=" + std::to_string(p.tp) + " must be at least 1");
  for (auto& [key, v] : split_by_tp)
    if (v % p.tp != 0)
      throw ConfigError("model." + std::string(key) + "=" + std::to_string(v) + " is not divisible by parallel.tp=" +
                        std::to_string(p.tp) + "; choose a tp that divides it (KV heads are not replicated across TP ranks)");
  if (m.expert_bias && p.etp > 1)
    throw ConfigError("model.expert_bias splits with the experts' hidden units under parallel.etp=" +
                      std::to_string(p.etp) + ", which is not built; use parallel.etp=1");
  if (m.qk_norm == "full" && p.tp > 1)
    throw ConfigError("model.qk_norm=\"full\" normalises over every head, which parallel.tp=" + std::to_string(p.tp) +
                      " splits across ranks; this is not supported yet: use parallel.tp=1 (or qk_norm=\"head\")");
  if (p.sp && p.tp > 1 && (r.train.micro_batch * m.seq_len) % p.tp != 0)
    throw ConfigError("parallel.sp=true needs train.micro_batch * model.seq_len (" +
                      std::to_string(r.train.micro_batch * m.seq_len) + ") divisible by parallel.tp=" +
                      std::to_string(p.tp) + "; change the micro-batch or turn sp off");
  if (p.zero < 0 || p.zero > 2)
    throw ConfigError("parallel.zero=" + std::to_string(p.zero) + " must be 0, 1 or 2");
  // Expert tensor parallelism splits every routed expert's hidden units over the etp ranks.
  if (p.etp > 1 && r.model.n_experts > 0 && m.expert_ffn_dim % p.etp != 0)
    throw ConfigError("model.expert_ffn_dim=" + std::to_string(m.expert_ffn_dim) + " is not divisible by parallel.etp=" +
                      std::to_string(p.etp) + "; choose an etp that divides it");
  if (p.ep > 1 && r.model.n_experts % p.ep != 0)
    throw ConfigError("parallel.ep=" + std::to_string(p.ep) + " does not divide model.n_experts=" +
                      std::to_string(r.model.n_experts) + "; choose an ep that divides the number of experts");
  GridSizes gs{int(p.tp), int(p.cp), int(p.dp), int(p.pp), int(p.ep), int(p.etp), p.order};
  ProcessGrid::make(gs, world, 0);  // ConfigError when the world does not fit the layout
}

RunContext make_run_context(const Recipe& r) {
  const ParallelConfig& p = r.parallel;
  RunContext ctx;
  ctx.env = read_launch_env();
  check_layout(r, ctx.env.world);
  // Ranks sharing a node share its cores: unless the user chose (OMP_NUM_THREADS), each rank's
  // kernels get an equal share instead of every rank starting one thread per core.
  if (ctx.env.local_size > 1 && !std::getenv("OMP_NUM_THREADS"))
    omp_set_num_threads(std::max(1, int(std::thread::hardware_concurrency()) / ctx.env.local_size));
  ctx.world = ctx.env.world > 1 ? make_mpi_world_comm(p.timeout_s) : make_local_comm();
  ctx.world->set_timeout_s(p.timeout_s);
  // srun without PMIx (or a wrapper that sets SLURM_* but starts singletons) gives every task a
  // world of its own: N independent "rank 0"s writing one out_dir.
  if (ctx.world->size() != ctx.env.world)
    throw ConfigError("MPI started " + std::to_string(ctx.world->size()) + " rank(s) but " + ctx.env.source + " says " +
                      std::to_string(ctx.env.world) + "; under Slurm launch with `srun --mpi=pmix`, else with mpirun");
  GridSizes gs{int(p.tp), int(p.cp), int(p.dp), int(p.pp), int(p.ep), int(p.etp), p.order};
  ctx.grid = ProcessGrid::make(gs, ctx.world->size(), ctx.world->rank());
  const Group& dp = ctx.grid.group(GroupKind::DP);
  ctx.dp = dp.size() == 1 ? make_local_comm() : ctx.world->subgroup(dp.ranks, "dp");
  ctx.dp->set_timeout_s(p.timeout_s);
  // Every rank creates the groups in the same order (dp, ep, edp, tp, etp, pp), as subgroup creation requires.
  for (auto [kind, slot, name] : {std::tuple{GroupKind::EP, &ctx.ep, "ep"}, std::tuple{GroupKind::EDP, &ctx.edp, "edp"},
                                  std::tuple{GroupKind::TP, &ctx.tp, "tp"}, std::tuple{GroupKind::ETP, &ctx.etp, "etp"},
                                  std::tuple{GroupKind::PP, &ctx.pp, "pp"}}) {
    const Group& g = ctx.grid.group(kind);
    *slot = g.size() == 1 ? make_local_comm() : ctx.world->subgroup(g.ranks, name);
    (*slot)->set_timeout_s(p.timeout_s);
  }
  // Tied embeddings across pipeline stages: the first and the last stage each hold the table and
  // sum their gradients of it in this group.
  const Group& pp = ctx.grid.group(GroupKind::PP);
  if (pp.size() > 1 && r.model.tie_embeddings && (ctx.pp->rank() == 0 || ctx.pp->rank() == pp.size() - 1)) {
    ctx.embed = ctx.world->subgroup({pp.ranks.front(), pp.ranks.back()}, "embed");
    ctx.embed->set_timeout_s(p.timeout_s);
  }
  return ctx;
}

}  // namespace sy
