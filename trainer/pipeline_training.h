// The trainer's side of pipeline parallelism: which layers a stage holds, and the model seen as
// the stage that parallel/pipeline_executor.h drives.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/model.h"
#include "parallel/pipeline_executor.h"

namespace sy {

// The model cut into pp * vpp chunks of consecutive layers: `sizes[g]` layers in chunk g when
// given (parallel.pp_layers), else as even as the layer count allows (the first
// n_layers % (pp * vpp) chunks one layer longer); rank r holds chunks v * pp + r for v in
// [0, vpp) (pipeline_schedule.h). ConfigError naming the key when they do not fit.
PipePlace pipeline_place(int64_t n_layers, int pp, int vpp, int rank, const std::vector<int64_t>& sizes = {});

// " pp=2 vpp=2 (layers 1/2/4/1)": the layout and every chunk's layer count in model order, for the banner.
std::string pipeline_layout_text(int64_t n_layers, int pp, int vpp, const std::vector<int64_t>& sizes);

// Global index (among the model's MoE layers) of the first MoE layer at or after layer l.
int64_t moe_layers_before(const ModelConfig& cfg, int64_t l);

// Model as a PipelineStage: micro-batch m's data comes from batch_of(m) (the same batch at its
// forward, recompute and backward); every forward that is not a recompute reports its loss parts
// through on_forward(c, m, parts).
class ModelPipelineStage : public PipelineStage {
 public:
  ModelPipelineStage(Model& model, std::function<const HostBatch&(int)> batch_of, double loss_scale,
                     std::function<void(int, int, const LossParts&)> on_forward)
      : model_(model), batch_of_(std::move(batch_of)), loss_scale_(loss_scale), on_forward_(std::move(on_forward)) {}
  void forward(int c, int m, bool recompute) override;
  void backward(int c, int m) override;
  const Tensor& input(int c) override { return model_.chunk_input(c); }
  const Tensor& output(int c) override { return model_.chunk_output(c); }
  const Tensor& grad() override { return model_.chunk_grad(); }

 private:
  Model& model_;
  std::function<const HostBatch&(int)> batch_of_;
  double loss_scale_;
  std::function<void(int, int, const LossParts&)> on_forward_;
};

}  // namespace sy
