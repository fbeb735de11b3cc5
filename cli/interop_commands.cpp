#include "cli/interop_commands.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "checkpoint/safetensors.h"
#include "config/recipe.h"
#include "engine/config_error.h"
#include "trainer/hf_interop.h"

namespace sy {

std::unique_ptr<InteropCommands> add_interop_commands(CLI::App& app) {
  auto c = std::make_unique<InteropCommands>();
  c->import_cmd = app.add_subcommand("import", "A Hugging Face model directory (safetensors) -> a Switchyard weights file");
  c->import_cmd->add_option("RECIPE", c->recipe, "The recipe of the model's architecture")->required();
  c->import_cmd->add_option("--from-hf", c->hf_dir, "The Hugging Face model directory (*.safetensors)")->required();
  c->import_cmd->add_option("--out", c->weights, "The weights file to write (.h5); train from it with "
                                                 "--set train.init_weights=FILE")->required();
  c->import_cmd->add_option("--family", c->family, "mixtral, qwen3_moe or olmoe (default: from the recipe's qk_norm)");
  c->export_cmd = app.add_subcommand("export", "A Switchyard weights file -> a Hugging Face model directory");
  c->export_cmd->add_option("RECIPE", c->recipe, "The recipe the weights were trained with")->required();
  c->export_cmd->add_option("--weights", c->weights, "The weights file (train.save_weights)")->required();
  c->export_cmd->add_option("--to-hf", c->hf_dir, "The directory to write model.safetensors and config.json into")->required();
  c->export_cmd->add_option("--family", c->family, "mixtral, qwen3_moe or olmoe (default: from the recipe's qk_norm)");
  return c;
}

int run_interop_commands(const InteropCommands& c) {
  const bool imp = c.import_cmd->parsed(), exp = c.export_cmd->parsed();
  if (!imp && !exp) return -1;
  const Recipe r = load_recipe(c.recipe);
  const std::string family = hf_family(r.model, c.family);
  try {
    if (imp) {
      const auto arrays = import_hf(r.model, family, read_safetensors_dir(c.hf_dir));
      write_weights_h5(c.weights, arrays, {{"recipe", r.resolved_toml}, {"imported_from", c.hf_dir}});
      std::printf("switchyard: %zu tensors of %s (%s) written to %s\n", arrays.size(), c.hf_dir.c_str(), family.c_str(),
                  c.weights.c_str());
    } else {
      const auto arrays = export_hf(r.model, family, read_weights_h5(c.weights));
      std::filesystem::create_directories(c.hf_dir);
      write_safetensors(c.hf_dir + "/model.safetensors", arrays, {{"format", "pt"}});
      std::ofstream(c.hf_dir + "/config.json") << hf_config_json(r.model, family);
      std::printf("switchyard: %zu tensors written to %s/model.safetensors (%s) with config.json\n", arrays.size(),
                  c.hf_dir.c_str(), family.c_str());
    }
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw ConfigError(e.what());
  }
  return 0;
}

}  // namespace sy
