// Hugging Face checkpoints in and out: the families' own tensor names (Mixtral, Qwen3-MoE,
// OLMoE) against Switchyard's (docs/model.md), safetensors on their side
// (checkpoint/safetensors.h), a Switchyard weights file on ours (layout-free: train.init_weights
// loads it at any parallel layout). Shapes agree but for the row-parallel matrices, the attention
// output projection and every down projection (w2), which Hugging Face stores [out, in] and
// Switchyard [in, out] (docs/weights-format.md): transposed on the way. Both RoPEs pair dimension i with i + head_dim/2, so q and k need no permutation.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/weights_io.h"
#include "engine/model_config.h"

namespace sy {

// "mixtral", "qwen3_moe" or "olmoe": `requested` if given (ConfigError naming the valid ones
// otherwise), else from the model's QK-norm (none: mixtral, head: qwen3_moe, full: olmoe).
std::string hf_family(const ModelConfig& cfg, const std::string& requested);

// The Hugging Face name of a Switchyard parameter, and whether its matrix is transposed between
// the two; ConfigError for a parameter the family has no tensor for (a dense FFN layer in an
// all-MoE family, shared experts).
std::pair<std::string, bool> hf_name_of(const std::string& ours, const std::string& family);

// Every parameter (and buffer: the router biases, zero) of the model `cfg` describes, from the
// Hugging Face tensors, as float32 in Switchyard's names and shapes. ConfigError naming the first
// missing tensor or wrong shape.
std::vector<std::pair<std::string, HostArray>> import_hf(const ModelConfig& cfg, const std::string& family,
                                                         const std::map<std::string, HostArray>& hf);
// The reverse, from a weights file's arrays (buffers left out): Hugging Face names and shapes.
std::vector<std::pair<std::string, HostArray>> export_hf(const ModelConfig& cfg, const std::string& family,
                                                         const std::map<std::string, HostArray>& ours);
// The config.json Hugging Face's Auto classes read for the family.
std::string hf_config_json(const ModelConfig& cfg, const std::string& family);

}  // namespace sy
