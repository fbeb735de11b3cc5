// Hugging Face checkpoints in and out: the families' own tensor names (Mixtral, Qwen3-MoE,
// OLMoE, DeepSeek-V3, gpt-oss) against Switchyard's (docs/model.md), safetensors on their side
// (checkpoint/safetensors.h), a Switchyard weights file on ours (layout-free: train.init_weights
// loads it at any parallel layout). Where each element goes is trainer/hf_names.h's
// placement: transposes of the row-parallel matrices, DeepSeek's shared experts as one MLP and
// its interleaved rotary rows, gpt-oss's fused experts (docs/weights-format.md).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/weights_io.h"
#include "engine/model_config.h"
#include "trainer/hf_names.h"

namespace sy {


// Every parameter (and buffer: the router biases, DeepSeek's e_score_correction_bias or zero) of the model `cfg` describes, from the
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
