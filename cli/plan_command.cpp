#include "cli/plan_command.h"

#include <cstdio>
#include <string>

#include "engine/config_error.h"
#include "planner/layout_search.h"
#include "planner/plan_input.h"

namespace sy {

std::unique_ptr<PlanCommand> add_plan_command(CLI::App& app) {
  auto c = std::make_unique<PlanCommand>();
  c->cmd = app.add_subcommand("plan", "Find the fewest GPUs that can train a recipe's model, and the fastest layouts, "
                                      "with predicted memory per GPU by category and step time");
  c->cmd->add_option("RECIPE", c->recipe, "Recipe TOML (its [model] and [optim])")->required();
  c->cmd->add_option("--gpu", c->gpu, "GPU from planner/gpus.toml: h100, h200, b200, gb200, h800")->required();
  c->cmd->add_option("--gpus", c->gpus, "GPU count to plan for (default: the fewest that fit)")->check(CLI::Range(1, 1 << 20));
  c->cmd->add_option("--seq", c->seq, "Sequence length (default: the recipe's model.seq_len)")->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  c->cmd->add_option("--global-batch", c->global_batch, "Sequences per optimizer step (default 256)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  c->cmd->add_option("--layout", c->layout, "Predict one layout instead of searching, e.g. tp=1,pp=4,ep=8,zero=1")->type_name("K=V,...");
  c->cmd->add_option("--top", c->top, "Rows to print (default 8)")->check(CLI::Range(1, 1000));
  c->cmd->add_option("--gpu-specs", c->gpu_specs, "GPU specification file (default planner/gpus.toml)")->type_name("FILE");
  return c;
}

namespace {

double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

void print_header() {
  std::printf("%5s  %-40s %7s %7s %7s %7s %8s %8s %6s %7s %6s %6s %7s %7s %4s %8s %9s %6s\n", "GPUs", "layout", "params",
              "grads", "optim", "act", "act-norc", "dispatch", "head", "work", "comm", "other", "total", "device", "fits",
              "step_s", "tok/s/GPU", "MFU");
}

void print_row(const PlanRow& r) {
  const StageMemory& m = r.worst;
  using C = MemCategory;
  std::printf("%5d  %-40s %7.2f %7.2f %7.2f %7.2f %8.2f %8.2f %6.2f %7.2f %6.2f %6.3f %7.2f %7.2f %4s %8.2f %9.0f %5.1f%%\n",
              r.layout.world(), r.layout.text().c_str(), gib(double(m[C::Parameters])), gib(double(m[C::Gradients])),
              gib(double(m[C::OptimizerState])), gib(double(m[C::Activations])), gib(double(r.activations_without_recompute)),
              gib(double(m.dispatch)), gib(double(m[C::HeadActivations])), gib(double(m[C::Workspace])),
              gib(double(m[C::Communication])), gib(double(m[C::Other])), gib(double(m.total())), gib(r.device_bytes),
              r.fits ? "yes" : "no", r.time.total_s, r.time.tokens_per_s / double(r.layout.world()), 100.0 * r.time.mfu);
}

}  // namespace

int run_plan_command(const PlanCommand& c) {
  if (!c.cmd || !c.cmd->parsed()) return -1;
  const GpuCatalog cat = load_gpu_catalog(c.gpu_specs);
  PlanRequest req;
  req.recipe = load_plannable_recipe(c.recipe);
  req.gpu = cat.find(c.gpu);
  req.assume = cat.assume;
  req.seq = c.seq > 0 ? c.seq : req.recipe.model.seq_len;
  req.global_batch = c.global_batch;
  ModelConfig at_seq = req.recipe.model;
  at_seq.seq_len = req.seq;
  const int64_t experts = at_seq.n_experts * 3 * at_seq.d_model * at_seq.expert_ffn_dim *
                          (at_seq.n_layers - std::min(at_seq.first_dense_layers, at_seq.n_layers));
  std::printf("switchyard plan: %s on %s (%.0f GiB, %.0f TFLOP/s bf16 dense, NVLink domain %d)\n", req.recipe.name.c_str(),
              req.gpu.name.c_str(), req.gpu.memory_gib, req.gpu.bf16_tflops, req.gpu.nvlink_domain);
  std::printf("  model: %.2fB routed-expert parameters, %.2fB active per token, %.1f GFLOP per token (6 x active + "
              "6 x layers x heads x (qk + v head widths) x seq) | seq %lld, %lld sequences per step | bf16, fp32 master weights and %s\n",
              double(experts) / 1e9, double(at_seq.active_params_per_token()) / 1e9, at_seq.train_flops_per_token() / 1e9,
              (long long)req.seq, (long long)req.global_batch, req.recipe.optim.name == "adamw" ? "AdamW moments" : "SGD");
  std::printf("  assumed: %.0f%% of peak in compute, %.0f%% of link bandwidth, %.1f GiB reserved + %.0f%% fragmentation per GPU, "
              "EP buffers for %.2fx the balanced rows (%s); memory in GiB per GPU of the fullest pipeline stage\n",
              100 * req.assume.compute_efficiency, 100 * req.assume.comm_efficiency, req.assume.reserved_gib,
              100 * req.assume.fragmentation, planned_imbalance(req),
              req.recipe.model.capacity_factor > 0 ? "the capacity factor" : "dropless bound");
  if (!c.layout.empty()) {
    const PlanLayout l = parse_plan_layout(c.layout, c.gpus, req.global_batch);
    check_engine_layout(req, l);  // a layout the engine would refuse is an error, not a plan
    const PlanRow row = plan_one(req, l);
    print_header();
    print_row(row);
    if (!row.fits)
      throw ConfigError("layout " + l.text() + " needs " + std::to_string(int(gib(row.device_bytes) + 0.5)) + " GiB per GPU on " +
                        c.gpu + " (" + std::to_string(int(req.gpu.memory_gib)) + " GiB); it cannot fit: `switchyard plan " +
                        c.recipe + " --gpu " + c.gpu + "` finds one that does");
    return 0;
  }
  std::vector<PlanRow> rows;
  if (c.gpus > 0) {
    rows = plan_layouts(req, c.gpus, false);
    if (rows.empty())
      throw ConfigError("no layout of " + req.recipe.name + " runs on " + std::to_string(c.gpus) + " GPUs under the engine's rules " +
                        "(tp, ep and etp must divide the heads, experts and GPUs); try another --gpus");
    if (!rows.front().fits) {
      const FewestGpus f = fewest_gpus(req);
      throw ConfigError("no layout of " + req.recipe.name + " fits " + std::to_string(c.gpus) + " x " + c.gpu + ": the leanest needs " +
                        std::to_string(int(gib(rows.front().device_bytes) + 0.5)) + " GiB per GPU of " +
                        std::to_string(int(req.gpu.memory_gib)) + (f.world ? "; use --gpus " + std::to_string(f.world) + " or more" : "; use a larger GPU"));
    }
    std::printf("fastest layouts on %d GPUs:\n", c.gpus);
  } else {
    const FewestGpus f = fewest_gpus(req);
    if (f.world == 0)
      throw ConfigError("no layout of " + req.recipe.name + " fits on up to 16384 x " + c.gpu + "; use a larger GPU or a shorter --seq");
    rows = f.rows;
    std::printf("fewest GPUs: %d (the fastest layouts that fit there)\n", f.world);
  }
  print_header();
  int printed = 0;
  for (const PlanRow& r : rows)
    if (r.fits && printed < c.top) print_row(r), ++printed;
  return 0;
}

}  // namespace sy
