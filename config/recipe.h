// A recipe: a TOML file with [model], [optim], [data], [train], [engine], [parallel], [checkpoint] and [launch] sections, plus command-line
// overrides `section.key=value`. Unknown keys, wrong types and inconsistent sizes are ConfigErrors.
#pragma once

#include <string>
#include <vector>

#include "checkpoint/checkpoint_config.h"
#include "data/data_config.h"
#include "engine/model_config.h"
#include "launch/launch_config.h"
#include "optim/optim_config.h"
#include "parallel/parallel_config.h"
#include "trainer/train_config.h"

namespace sy {

struct Recipe {
  std::string name;  // from the file name: recipes/tiny-moe.toml -> tiny-moe
  std::string path;
  ModelConfig model;
  OptimConfig optim;
  DataConfig data;
  TrainConfig train;
  EngineConfig engine;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  LaunchConfig launch;
  std::string resolved_toml;  // the recipe after overrides, for provenance
};

// Reads and validates; throws ConfigError with a one-line message naming key/file and the fix.
Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});
Recipe parse_recipe(const std::string& toml_text, const std::string& name,
                    const std::vector<std::string>& overrides = {});

}  // namespace sy
