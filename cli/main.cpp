// The `switchyard` command: train, eval and data preparation. Bad input of any kind ends with one
// line on stderr, `switchyard: error: ...`, and exit code 2, so scripts can tell it from a crash (1).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/ckpt_commands.h"
#include "cli/interop_commands.h"
#include "cli/launch_commands.h"
#include "cli/plan_command.h"
#include "cli/schedule_commands.h"
#include "config/recipe.h"
#include "data/prepare.h"
#include "parallel/comm.h"
#include "engine/config_error.h"
#include "trainer/exit_codes.h"
#include "trainer/trainer.h"

namespace {

using sy::kExitFailure;
using sy::kExitPeerLost;  // a collective timed out: another rank stalled or died
using sy::kExitUsage;

void fail_line(const std::string& msg) {
  std::string one = msg;
  for (char& c : one)
    if (c == '\n' || c == '\r') c = ' ';
  // In a multi-rank job every rank may report; the prefix says which one spoke.
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  if (!rank) rank = std::getenv("SLURM_PROCID");
  if (rank)
    std::fprintf(stderr, "switchyard: rank %s: error: %s\n", rank, one.c_str());
  else
    std::fprintf(stderr, "switchyard: error: %s\n", one.c_str());
}

// Each --set takes exactly one value, so `--set a=1 recipe.toml` cannot swallow the recipe.
CLI::Option* add_set_option(CLI::App* cmd, std::vector<std::string>& sets) {
  return cmd->add_option("--set", sets, "Override a recipe value: section.key=value (repeatable), e.g. train.steps=100")
      ->type_name("SECTION.KEY=VALUE")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

// The most specific subcommand that was parsed, for the `--help` hint after a usage error.
std::string command_path(CLI::App& app) {
  std::string path = "switchyard";
  CLI::App* cur = &app;
  for (bool found = true; found;) {
    found = false;
    for (CLI::App* sub : cur->get_subcommands()) {
      path += " " + sub->get_name();
      cur = sub;
      found = true;
      break;
    }
  }
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Switchyard: train and evaluate Mixture-of-Experts language models on the CPU", "switchyard"};
  app.require_subcommand(1);
  app.fallthrough(false);

  std::string recipe_path, weights, data_path, out_prefix;
  std::vector<std::string> sets, text_files;
  int64_t windows = std::numeric_limits<int64_t>::max();
  int64_t val_every = 20;
  bool fortunes = false;

  CLI::App* train = app.add_subcommand("train", "Train a model from a recipe");
  train->add_option("RECIPE", recipe_path, "Recipe file (TOML), e.g. recipes/tiny-moe.toml")->required();
  add_set_option(train, sets);
  std::string resume;
  train->add_option("--resume", resume,
                    "auto (default: the newest checkpoint under out_dir that verifies), none, or a step directory; "
                    "same as --set checkpoint.resume=...")
      ->type_name("auto|none|DIR");

  CLI::App* eval = app.add_subcommand("eval", "Mean loss of saved weights over a token file, read in order");
  eval->add_option("RECIPE", recipe_path, "The recipe the weights were trained with")->required();
  eval->add_option("--weights", weights, "HDF5 weights written by train.save_weights")->required()->type_name("FILE.h5");
  eval->add_option("--data", data_path, "Token file to evaluate on")->required()->type_name("TOKENS");
  eval->add_option("--windows", windows, "Evaluate at most N windows (default: all)")->type_name("N");
  add_set_option(eval, sets);

  CLI::App* data = app.add_subcommand("data", "Data preparation");
  data->require_subcommand(1);
  CLI::App* prepare = data->add_subcommand("prepare", "Write byte-level token files <PREFIX>.train.tok and <PREFIX>.val.tok");
  CLI::Option* fortunes_opt = prepare->add_flag("--fortunes", fortunes, "Use Debian's fortune files (/usr/share/games/fortunes)");
  CLI::Option* text_opt = prepare->add_option("--text", text_files, "Plain-text files; records are split at lines \"%\" or at blank lines")
                              ->type_name("FILE...");
  fortunes_opt->excludes(text_opt);
  prepare->add_option("--out", out_prefix, "Output prefix, e.g. data/fortunes")->required()->type_name("PREFIX");
  prepare->add_option("--val-every", val_every, "With --text: every N-th record goes to validation")
      ->type_name("N")
      ->check(CLI::Range(int64_t(2), std::numeric_limits<int64_t>::max()));

  std::string ckpt_path, dump_name;
  CLI::App* ckpt = app.add_subcommand("ckpt", "Checkpoints: inspect and verify");
  ckpt->require_subcommand(1);
  CLI::App* inspect = ckpt->add_subcommand("inspect", "List a checkpoint's tensors, dtypes, global shapes, step and attributes");
  inspect->add_option("PATH", ckpt_path, "A step directory, or a run's out_dir (its `latest` checkpoint)")->required();
  inspect->add_option("--dump", dump_name, "Print the values of one tensor, one per line")->type_name("NAME");
  CLI::App* verify = ckpt->add_subcommand("verify", "Check every checksum and the completeness audit; exit 0 if sound, 1 if not");
  verify->add_option("PATH", ckpt_path, "A step directory, or a run's out_dir (its `latest` checkpoint)")->required();

  const auto launch = sy::add_launch_commands(app, add_set_option);
  const auto schedule = sy::add_schedule_command(app);
  const auto interop = sy::add_interop_commands(app);
  const auto plan = sy::add_plan_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports a misspelt command only as "A subcommand is required".
    if (app.get_subcommands().empty() && argc > 1 && argv[1][0] != '-') {
      fail_line(std::string("unknown command \"") + argv[1] + "\"; valid commands: train, run, sbatch, eval, data, ckpt, schedule, import, export, plan (see `switchyard --help`)");
      return kExitUsage;
    }
    fail_line(std::string(e.what()) + "; run `" + command_path(app) + " --help`");
    return kExitUsage;
  }

  try {
    if (train->parsed()) {
      if (!resume.empty()) sets.push_back("checkpoint.resume=" + resume);
      return sy::run_training(sy::load_recipe(recipe_path, sets));
    }
    if (eval->parsed()) {
      if (windows < 1)
        throw sy::ConfigError("--windows=" + std::to_string(windows) + " must be at least 1");
      if (!std::filesystem::is_regular_file(weights))
        throw sy::ConfigError(weights + ": no such weights file; write one with `switchyard train` and train.save_weights=FILE.h5");
      return sy::run_eval(sy::load_recipe(recipe_path, sets), weights, data_path, windows);
    }
    if (const int code = sy::run_launch_command(*launch); code >= 0) return code;
    if (const int code = sy::run_schedule_command(*schedule); code >= 0) return code;
    if (const int code = sy::run_interop_commands(*interop); code >= 0) return code;
    if (const int code = sy::run_plan_command(*plan); code >= 0) return code;
    if (inspect->parsed()) return sy::run_ckpt_inspect(ckpt_path, dump_name);
    if (verify->parsed()) return sy::run_ckpt_verify(ckpt_path);
    if (prepare->parsed()) {
      if (fortunes) sy::prepare_fortunes(out_prefix);
      else if (!text_files.empty()) sy::prepare_text_files(text_files, out_prefix, val_every);
      else throw sy::ConfigError("data prepare needs --fortunes or --text FILE...; see `switchyard data prepare --help`");
      return 0;
    }
  } catch (const sy::ConfigError& e) {
    fail_line(e.what());
    return kExitUsage;
  } catch (const sy::CommTimeout& e) {
    fail_line(e.what());
    // The other surviving ranks are blocked in the same operation with about the same deadline:
    // give them a moment to report it too before this exit makes the launcher end the job.
    std::this_thread::sleep_for(std::chrono::seconds(2));
    return kExitPeerLost;
  } catch (const std::exception& e) {
    fail_line(e.what());
    return kExitFailure;
  }
  return kExitUsage;
}
