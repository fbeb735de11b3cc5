// Where each Switchyard parameter lives in a Hugging Face family's checkpoint: the tensor, its
// whole shape, and for every element (r, c) of the parameter (viewed [rows, cols]; a vector is
// one row) the flat index of the same element in that tensor. One map covers every family's
// conventions: a transposed matrix (row-parallel ones are stored [in, out] here), a block of a
// wider tensor (DeepSeek's shared experts are one MLP there), a slice of a fused 3-D expert
// tensor with gate and up interleaved (gpt-oss), a permutation of the rotary rows (DeepSeek's
// interleaved RoPE against our halves). Import gathers through it, export scatters.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "engine/model_config.h"
#include "engine/tensor.h"

namespace sy {

struct HfPlacement {
  std::string name;  // the Hugging Face tensor
  Shape shape;       // its whole shape
  std::function<int64_t(int64_t r, int64_t c)> index;
};

// f(i, j) for every element of a parameter of `shape`: i its flat index here, j the flat index of
// the same element in the placement's tensor. Import gathers and export scatters through it.
template <class F> void for_each_placed(const HfPlacement& pl, const Shape& shape, F&& f) {
  const int64_t rows = shape.size() == 2 ? shape[0] : 1, cols = shape.empty() ? 1 : shape.back();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) f(r * cols + c, pl.index(r, c));
}

// The placement of `ours` (a parameter or buffer of shape `shape`) in `family`'s checkpoint;
// ConfigError for one the family has no tensor for.
HfPlacement hf_placement(const std::string& ours, const Shape& shape, const ModelConfig& cfg,
                         const std::string& family);

// "mixtral", "qwen3_moe", "olmoe", "deepseek_v3" or "gpt_oss": `requested` if given (ConfigError
// naming the valid ones otherwise), else from the model's features (MLA: deepseek_v3; sinks or
// expert biases: gpt_oss; else by QK-norm: none mixtral, head qwen3_moe, full olmoe).
std::string hf_family(const ModelConfig& cfg, const std::string& requested);

}  // namespace sy
