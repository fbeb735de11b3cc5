// The model's weights as an HDF5 file: one dataset per parameter (and router bias), named by its
// path (e.g. layers.3.moe.experts.5.w1), with its shape; docs/weights-format.md.
#pragma once

#include <map>
#include <string>

#include "engine/model.h"

namespace sy {

void save_weights(Model& model, const std::string& path, const std::map<std::string, std::string>& attrs = {});
// Every parameter and buffer must be present with its shape; a ConfigError names the first that is not.
void load_weights(Model& model, const std::string& path);

}  // namespace sy
