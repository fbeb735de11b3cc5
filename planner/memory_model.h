// The planner's memory model: what each rank's allocator will hold, per category
// (engine/memory.h), for a model, a layout and a precision, written term by term from what the
// engine allocates (docs/planner.md lists every term). tests/test_planner.cpp holds it to the
// engine's measured peaks within 10% per category, so the two cannot drift apart.
#pragma once

#include <array>
#include <cstdint>

#include "engine/memory.h"
#include "engine/model_config.h"
#include "planner/plan_layout.h"

namespace sy {

struct MemoryInputs {
  ModelConfig model;  // model.seq_len is the training sequence length
  PlanLayout layout;
  Precision prec;
  bool adamw = true;  // false: SGD (no moments)
  // Expert-side buffers are sized by the rows routing sends them (their high-water mark). Rows
  // received per MoE layer over EP, and rows gathered over ETP, as multiples of the balanced
  // share n_r * top_k (n_r: the token rows a rank routes) and etp * n_r * top_k.
  double received_factor = 1.0, gathered_factor = 1.0;
  int eval_micro_batches = 1;  // evaluation's pipeline passes per call (their send buffers)
};

// Parameter elements a rank of a stage holds, per flat-buffer segment (engine/params.h):
// replicated dense, TP row blocks, routed experts (the rank's E/ep experts, their 1/etp slices).
struct SegmentCounts {
  int64_t n[3] = {0, 0, 0};
};
SegmentCounts held_params(const ModelConfig& m, const PlanLayout& l, int stage);

using CategoryBytes = std::array<int64_t, MemoryCounters::kN>;

struct StageMemory {
  CategoryBytes bytes{};
  int64_t pipeline_buffers = 0;  // the pipeline executor's transfer and kept-input buffers
  int64_t pipeline_bytes = 0;    // their bytes (part of activations)
  int64_t dispatch = 0;          // the expert-side (EP/ETP) buffers, part of activations + workspace
  int64_t in_flight = 1;         // micro-batches in flight on the stage (1F1B); 1 without pipeline
  int64_t moe_layers = 0;        // MoE layers the stage holds
  int64_t balanced_rows = 0;     // n_r * top_k: the rows an EP rank receives per layer when balanced
  int64_t total() const;
  int64_t& operator[](MemCategory c) { return bytes[size_t(c)]; }
  int64_t operator[](MemCategory c) const { return bytes[size_t(c)]; }
};

// Peak bytes per category on a rank of pipeline stage `stage` (its first rank in every other
// group: dp, tp, ep coordinate 0; the others differ by ZeRO padding only).
StageMemory predict_stage_memory(const MemoryInputs& in, int stage);

// Buffers the pipeline executor creates on rank `rank` (parallel/pipeline_executor.cpp: a send is
// held until a later receive proves it arrived (send_completion_points), receives are posted two
// ahead, a non-first chunk keeps its input),
// the larger of a training step and an evaluation pass of `eval_micro` micro-batches.
int64_t pipeline_buffer_count(int pp, int vpp, int micro, int rank, int eval_micro);

}  // namespace sy
