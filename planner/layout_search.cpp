#include "planner/layout_search.h"

#include <algorithm>

#include "engine/config_error.h"
#include "trainer/run_context.h"

namespace sy {

namespace {

Recipe with_layout(const PlanRequest& req, const PlanLayout& l) {
  Recipe r = req.recipe;
  r.model.seq_len = req.seq;
  r.parallel.tp = l.tp, r.parallel.pp = l.pp, r.parallel.vpp = l.vpp, r.parallel.dp = l.dp;
  r.parallel.ep = l.ep, r.parallel.etp = l.etp, r.parallel.zero = l.zero, r.parallel.sp = l.sp;
  r.parallel.pp_layers = l.pp_layers;
  r.train.micro_batch = l.micro_batch, r.train.grad_accum = l.micro_batches;
  return r;
}

std::vector<int> divisors(int64_t n, int64_t at_most) {
  std::vector<int> v;
  for (int64_t d = 1; d <= std::min(n, at_most); ++d)
    if (n % d == 0) v.push_back(int(d));
  return v;
}

bool engine_accepts(const PlanRequest& req, const PlanLayout& l) {
  try {
    check_engine_layout(req, l);
    return true;
  } catch (const ConfigError&) {
    return false;
  }
}

}  // namespace

void check_engine_layout(const PlanRequest& req, const PlanLayout& l) {
  if (l.tp > req.gpu.nvlink_domain)
    throw ConfigError("tp=" + std::to_string(l.tp) + " spans more than one NVLink domain of " + req.gpu.key + " (" +
                      std::to_string(req.gpu.nvlink_domain) + " GPUs); keep tp <= " + std::to_string(req.gpu.nvlink_domain));
  check_layout(with_layout(req, l), l.world());
}

double planned_imbalance(const PlanRequest& req) {
  const double cf = req.recipe.model.capacity_factor;
  return cf > 0 ? cf : req.assume.dropless_imbalance;
}

PlanRow plan_one(const PlanRequest& req, const PlanLayout& layout) {
  MemoryInputs in;
  in.model = req.recipe.model;
  in.model.seq_len = req.seq;
  in.layout = layout;
  in.prec = req.prec;
  in.adamw = req.recipe.optim.name == "adamw";
  in.received_factor = in.gathered_factor = planned_imbalance(req);
  PlanRow row;
  row.layout = layout;
  for (int s = 0; s < layout.pp; ++s) {
    const StageMemory m = predict_stage_memory(in, s);
    if (s == 0 || m.total() > row.worst.total()) row.worst = m, row.worst_stage = s;
  }
  const int64_t act = row.worst[MemCategory::Activations];
  row.activations_without_recompute = layout.pp > 1 ? (act - row.worst.pipeline_bytes) * row.worst.in_flight : act;
  row.device_bytes = double(row.worst.total()) * (1 + req.assume.fragmentation) + req.assume.reserved_gib * 1024.0 * 1024 * 1024;
  row.fits = row.device_bytes <= req.gpu.memory_bytes();
  row.time = predict_step_time(in.model, layout, req.gpu, req.assume, req.prec);
  return row;
}

std::vector<PlanRow> plan_layouts(const PlanRequest& req, int world, bool memory_minimal) {
  const ModelConfig& m = req.recipe.model;
  std::vector<PlanRow> rows;
  const int64_t experts = std::max<int64_t>(1, m.n_experts);
  for (int tp : {1, 2, 4, 8}) {
    if (world % tp != 0 || tp > req.gpu.nvlink_domain) continue;
    for (int pp : divisors(world / tp, m.n_layers)) {
      const int dp = world / (tp * pp);
      for (int vpp : {1, 2, 4}) {
        if ((pp == 1 && vpp > 1) || pp * vpp > m.n_layers || (memory_minimal && vpp > 1)) continue;
        for (int ep : divisors(experts, int64_t(tp) * dp)) {
          for (int etp : {1, 2, 4, 8}) {
            if ((int64_t(tp) * dp) % (int64_t(ep) * etp) != 0 || (m.n_experts == 0 && etp > 1)) continue;
            for (int zero : {0, 1, 2}) {
              if (memory_minimal && zero != 1) continue;
              for (bool sp : {false, true}) {
                if ((sp && tp == 1) || (memory_minimal && tp > 1 && !sp)) continue;
                for (int64_t mb : {1, 2, 4, 8}) {
                  if (memory_minimal && mb > 1) continue;
                  if (req.global_batch % (int64_t(dp) * mb) != 0) continue;
                  PlanLayout l;
                  l.tp = tp, l.pp = pp, l.vpp = vpp, l.dp = dp, l.ep = ep, l.etp = etp, l.zero = zero, l.sp = sp;
                  l.micro_batch = mb, l.micro_batches = req.global_batch / (int64_t(dp) * mb);
                  if (!engine_accepts(req, l)) continue;
                  rows.push_back(plan_one(req, l));
                }
              }
            }
          }
        }
      }
    }
  }
  std::stable_sort(rows.begin(), rows.end(), [](const PlanRow& a, const PlanRow& b) {
    if (a.fits != b.fits) return a.fits;
    return a.fits ? a.time.total_s < b.time.total_s : a.device_bytes < b.device_bytes;
  });
  return rows;
}

FewestGpus fewest_gpus(const PlanRequest& req, int max_world) {
  for (int world = 1; world <= max_world; world = world < 8 ? world * 2 : world + 8) {
    std::vector<PlanRow> rows = plan_layouts(req, world, true);
    if (!rows.empty() && rows.front().fits) {
      // The fewest GPUs found with the memory-lean options; now every option at that count.
      return {world, plan_layouts(req, world, false)};
    }
  }
  return {};
}

}  // namespace sy
