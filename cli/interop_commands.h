// `switchyard import` and `switchyard export`: Hugging Face checkpoints (safetensors, the
// family's tensor names) to a Switchyard weights file and back (trainer/hf_interop.h).
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

namespace sy {

struct InteropCommands {
  CLI::App *import_cmd = nullptr, *export_cmd = nullptr;
  std::string recipe, hf_dir, weights, family;
};

std::unique_ptr<InteropCommands> add_interop_commands(CLI::App& app);
// Runs whichever was parsed; -1 when neither. Bad input throws ConfigError (exit 2).
int run_interop_commands(const InteropCommands& c);

}  // namespace sy
