#include "config/validate.h"

#include <charconv>
#include <cmath>
#include <initializer_list>

#include "engine/config_error.h"

namespace sy {

std::string format_number(double v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}

namespace {

std::string num(int64_t v) { return std::to_string(v); }
std::string num(double v) { return format_number(v); }

void at_least(const std::string& key, int64_t v, int64_t lo) {
  if (v < lo) throw ConfigError(key + "=" + num(v) + " must be >= " + num(lo) + "; set " + key + " >= " + num(lo));
}
void number_at_least(const std::string& key, double v, double lo, bool strict) {
  if (!std::isfinite(v) || v < lo || (strict && v == lo))
    throw ConfigError(key + "=" + num(v) + " must be a number " + (strict ? "> " : ">= ") + num(lo));
}
void one_of(const std::string& key, const std::string& v, std::initializer_list<const char*> choices) {
  std::string list;
  for (const char* c : choices) {
    if (v == c) return;
    list += list.empty() ? "" : " or ";
    list += std::string("\"") + c + "\"";
  }
  throw ConfigError(key + "=\"" + v + "\" is not a valid choice; set it to " + list);
}

}  // namespace

void validate_optim(const OptimConfig& o) {
  one_of("optim.name", o.name, {"adamw", "sgd"});
  one_of("optim.schedule", o.schedule, {"cosine", "constant"});
  number_at_least("optim.lr", o.lr, 0, true);
  number_at_least("optim.min_lr", o.min_lr, 0, false);
  if (o.schedule == "cosine" && o.min_lr > o.lr)
    throw ConfigError("optim.min_lr=" + num(o.min_lr) + " exceeds optim.lr=" + num(o.lr) +
                      "; the cosine schedule decays from lr to min_lr, so set min_lr <= lr");
  at_least("optim.warmup_steps", o.warmup_steps, 0);
  for (auto [key, v] : {std::pair{"optim.beta1", o.beta1}, std::pair{"optim.beta2", o.beta2}})
    if (!(std::isfinite(v) && v >= 0 && v < 1))
      throw ConfigError(std::string(key) + "=" + num(v) + " must be in [0, 1)");
  number_at_least("optim.eps", o.eps, 0, true);
  number_at_least("optim.weight_decay", o.weight_decay, 0, false);
  number_at_least("optim.grad_clip", o.grad_clip, 0, false);
}

void validate_data(const DataConfig& d) {
  if (d.train.empty()) throw ConfigError("data.train is empty; set it to a token file (see `switchyard data prepare`)");
  if (d.val.empty()) throw ConfigError("data.val is empty; set it to a token file (see `switchyard data prepare`)");
}

void validate_train(const TrainConfig& t) {
  at_least("train.steps", t.steps, 1);
  at_least("train.micro_batch", t.micro_batch, 1);
  at_least("train.grad_accum", t.grad_accum, 1);
  at_least("train.log_every", t.log_every, 1);
  at_least("train.eval_every", t.eval_every, 0);
  at_least("train.eval_batches", t.eval_batches, 1);
  number_at_least("train.max_minutes", t.max_minutes, 0, false);
  at_least("train.stop_at_step", t.stop_at_step, 0);
  at_least("train.max_bad_steps", t.max_bad_steps, 1);
  number_at_least("train.peak_gflops", t.peak_gflops, 0, true);
  one_of("train.dtype", t.dtype, {"float32", "float64", "bfloat16"});
}

void validate_engine(const EngineConfig& e, const TrainConfig& t, const ParallelConfig& p) {
  one_of("engine.device", e.device, {"cpu", "cuda", "cuda-emu", "auto"});
  // The CUDA backend runs float32 and bfloat16 mixed precision; float64 is the CPU reference's,
  // for gradient checks; the CPU backend has no bfloat16 arithmetic.
  if (e.device != "cpu" && t.dtype == "float64")
    throw ConfigError("train.dtype=\"float64\" runs only on engine.device=\"cpu\"; set train.dtype=\"float32\"");
  if (e.device == "cpu" && t.dtype == "bfloat16")
    throw ConfigError("train.dtype=\"bfloat16\" needs the CUDA backend; set engine.device=\"cuda\" (or \"cuda-emu\"), "
                      "or train.dtype=\"float32\"");
}

void validate_parallel(const ParallelConfig& p) {
  for (auto [key, v] : {std::pair{"parallel.tp", p.tp}, std::pair{"parallel.cp", p.cp}, std::pair{"parallel.pp", p.pp},
                        std::pair{"parallel.vpp", p.vpp}, std::pair{"parallel.ep", p.ep}, std::pair{"parallel.etp", p.etp}})
    at_least(key, v, 1);
  at_least("parallel.dp", p.dp, 0);
  if (p.zero < 0 || p.zero > 2)
    throw ConfigError("parallel.zero=" + num(p.zero) + " must be 0, 1 or 2");
  if (p.order.empty()) throw ConfigError("parallel.order is empty; set it to e.g. \"tp-cp-dp-pp\"");
  number_at_least("parallel.timeout_s", p.timeout_s, 0, true);
  number_at_least("parallel.bucket_mb", p.bucket_mb, 0, true);
  one_of("parallel.comm", p.comm, {"auto", "mpi", "nccl"});
}

void validate_checkpoint(const CheckpointConfig& c) {
  at_least("checkpoint.every_steps", c.every_steps, 0);
  at_least("checkpoint.keep", c.keep, 1);
  one_of("checkpoint.on_failure", c.on_failure, {"stop", "continue"});
  if (c.resume.empty())
    throw ConfigError("checkpoint.resume is empty; set it to \"auto\", \"none\" or a checkpoint directory");
}

void validate_launch(const LaunchConfig& l) {
  number_at_least("launch.hang_timeout_s", l.hang_timeout_s, 0, true);
  at_least("launch.max_restarts", l.max_restarts, 0);
  number_at_least("launch.backoff_s", l.backoff_s, 0, false);
  number_at_least("launch.backoff_max_s", l.backoff_max_s, 0, false);
  if (l.backoff_max_s < l.backoff_s)
    throw ConfigError("launch.backoff_max_s=" + num(l.backoff_max_s) + " is below launch.backoff_s=" + num(l.backoff_s) +
                      "; set backoff_max_s >= backoff_s");
  at_least("launch.preempt_grace_s", l.preempt_grace_s, 1);
}

void validate_recipe(const Recipe& r) {
  r.model.validate();
  validate_optim(r.optim);
  validate_data(r.data);
  validate_train(r.train);
  validate_engine(r.engine, r.train, r.parallel);
  validate_parallel(r.parallel);
  validate_checkpoint(r.checkpoint);
  validate_launch(r.launch);
}

}  // namespace sy
