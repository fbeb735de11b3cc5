// What a step reports: the progress line on stdout and one JSON object per logged step in
// <out_dir>/metrics.jsonl. Doubles are written with 17 significant digits so they read back
// bit for bit; a value that is not finite (a skipped step's) as null.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "engine/memory.h"
#include "parallel/comm.h"
#include "parallel/pipeline_executor.h"

namespace sy {

struct StepRecord {
  int64_t step = 0, total_steps = 0;
  double loss = 0;  // mean cross-entropy of the step's micro-batches (nats/token)
  double aux_loss = 0, z_loss = 0;
  double lr = 0, grad_norm = 0;
  double tokens_per_s = 0, mfu = 0;
  double expert_share_min = 0, expert_share_max = 0;  // share of a layer's assignments per expert
  double dropped_share = 0;
  // Which tokens were dropped, as a sum over micro-batches and MoE layers of a 32-bit hash of
  // (the micro-batch's first sample, layer, dropped_digest): equal in any layout that drops the
  // same tokens of the same micro-batches (-1: no MoE layer).
  int64_t dropped_digest = -1;
  double expert_imbalance = 0;  // max over layers of (most loaded expert / mean load)
  // Expert parallelism, this step, summed over ranks: all-to-all bytes the communicator recorded
  // and the bytes the routing implies (-1: no expert parallelism).
  int64_t a2a_bytes = -1, a2a_bytes_routing = -1;
  // The same per world rank, and what else each rank's EP communicator sent in the step (0: the
  // token exchange is the only EP traffic; no all-gather of tokens).
  std::vector<int64_t> a2a_bytes_by_rank, a2a_routing_by_rank, ep_other_bytes_by_rank;
  double a2a_seconds = 0;  // this step's time inside token exchanges, mean over ranks
  // Tensor parallelism: bytes this rank sent in its TP group this step (-1: no TP), counted by
  // the communicator; docs/parallel.md gives the formula.
  int64_t tp_bytes = -1;
  // Expert tensor parallelism: bytes this rank sent in its ETP group this step (-1: no ETP), the
  // same way (docs/parallel.md).
  int64_t etp_bytes = -1;
  // Overlap (parallel.overlap_grad_reduce): of the step's gradient buckets, how many the backward
  // started (all of them when every layer's backward reported its gradients); -1: no overlap.
  int64_t buckets_in_backward = -1, buckets = -1;
  // Pipeline parallelism, per stage of rank 0's pipeline (empty: no pipeline): the step's idle
  // share measured from the engine's timestamps (the bubble), the most micro-batches forwarded
  // and not yet backwarded, the most chunk inputs kept for backward, and the recomputed forwards.
  std::vector<double> pp_idle_by_stage;
  std::vector<int64_t> pp_in_flight_by_stage, pp_kept_inputs_by_stage, pp_recomputes_by_stage;
  // The backend allocator's peak bytes since start-up per category (engine/memory.h), per world
  // rank: mem_peak_bytes[c][r] (written as {"parameters": [r0, r1, ...], ...}); and the peak of
  // the total per rank.
  std::vector<std::vector<int64_t>> mem_peak_bytes;
  std::vector<int64_t> mem_peak_total_bytes;
  std::vector<std::vector<int64_t>> expert_tokens;  // per MoE layer, per expert
  double eta_s = 0;
  std::optional<double> val_loss;
  // The NaN guard (trainer/step_guard.h): this step's update was skipped; steps skipped and
  // rollbacks so far in this process.
  bool skipped = false;
  int64_t skipped_steps = 0, rollbacks = 0;
};

class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path);  // appends; the directory must exist
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const StepRecord& r);

 private:
  std::FILE* f_ = nullptr;
};

std::string progress_line(const StepRecord& r);

// On resume: drops the records of steps after `step` (logged before the run died, after its last
// checkpoint), so the log reads as one run.
void keep_records_up_to(const std::string& path, int64_t step);

// Collectives that fill a record's per-rank fields, called by every rank of the group at a logged
// step: the allocator's peaks of every world rank (record_memory_peaks), the pipeline figures of
// every stage (record_pipeline_stats).
void record_memory_peaks(Communicator& world, const MemoryCounters& mine, StepRecord& rec);
void record_pipeline_stats(Communicator& pp, const PipeStepStats& mine, StepRecord& rec);

}  // namespace sy
