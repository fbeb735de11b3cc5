// Runs the built `switchyard` binary (alone or under mpirun) on a small synthetic corpus and
// reads back what a run leaves: per-step losses from metrics.jsonl and the final weights.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/weights_io.h"
#include "data/token_file.h"

namespace sy::testing {

namespace fs = std::filesystem;

struct RunResult {
  int code = -1;
  std::string output;  // stdout and stderr together
  double seconds = 0;
};

inline std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A fresh directory holding a small token corpus: text-like bytes with learnable structure.
class RunDir {
 public:
  explicit RunDir(const std::string& tag) {
    dir_ = fs::temp_directory_path() / ("sy_run_" + std::to_string(getpid()) + "_" + tag);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::vector<uint32_t> tokens;
    const std::string words[] = {"the ", "expert ", "router ", "sends ", "tokens ", "to ", "a ", "rank. "};
    uint64_t x = 12345;
    for (int i = 0; i < 40000; ++i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      for (char c : words[(x >> 33) % 8]) tokens.push_back(uint8_t(c));
    }
    write_token_file((dir_ / "train.tok").string(), tokens, 256, 2);
    tokens.resize(8000);
    write_token_file((dir_ / "val.tok").string(), tokens, 256, 2);
  }
  ~RunDir() { fs::remove_all(dir_); }
  const fs::path& path() const { return dir_; }

  // `switchyard train RECIPE` with the corpus and out_dir set; ranks > 0 runs under mpirun.
  // `env` is a prefix of VAR=value words for the launched processes.
  // `recipe` is relative to the source tree.
  RunResult train(const std::string& name, int ranks, const std::string& sets, const std::string& env = "",
                  const std::string& recipe = "tests/recipes/tiny-test.toml") const {
    const fs::path out = dir_ / name;
    // One thread per process unless the test says otherwise: oneDNN's GEMMs round differently at
    // different thread counts on some CPUs (AVX2 EPYC: up to 5x the 1e-5 element bound after 10
    // AdamW steps, which magnify the last bits of near-zero gradients), and a 1-rank reference
    // would otherwise run two threads where each of its N-rank twin's ranks runs 2/N. With the
    // same threads everywhere the equivalence tests measure the parallel algorithm (a pipeline
    // run is then the 1-rank run to the bit).
    const std::string threads = env.find("OMP_NUM_THREADS=") == std::string::npos ? "OMP_NUM_THREADS=1 " : "";
    std::string cmd = "cd '" + dir_.string() + "' && " + threads + env + " ";
    if (ranks > 0)
      cmd += "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 300 mpirun --oversubscribe --mca btl "
             "self,vader -quiet -np " + std::to_string(ranks) + " ";
    cmd += std::string("'") + SY_BINARY_DIR + "/switchyard' train '" + SY_SOURCE_DIR + "/" + recipe + "' " +
           "--set data.train=train.tok --set data.val=val.tok --set train.out_dir=" + out.string() +
           " --set train.save_weights=" + (out / "weights.h5").string() + " " + sets + " >'" +
           (dir_ / (name + ".log")).string() + "' 2>&1";
    const auto t0 = std::chrono::steady_clock::now();
    const int status = std::system(cmd.c_str());
    RunResult r;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.output = slurp(dir_ / (name + ".log"));
    return r;
  }

  // The "loss" of every record in a run's metrics.jsonl, in order.
  std::vector<double> losses(const std::string& name) const {
    std::vector<double> out;
    std::ifstream in(dir_ / name / "metrics.jsonl");
    const std::regex re("\"loss\":([-0-9.eE+]+)");
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (std::regex_search(line, m, re)) out.push_back(std::stod(m[1]));
    }
    return out;
  }
  // The raw JSON text of one field (e.g. "expert_tokens") of every metrics record that has it.
  std::vector<std::string> field(const std::string& name, const std::string& key) const {
    std::vector<std::string> out;
    std::ifstream in(dir_ / name / "metrics.jsonl");
    const std::regex re("\"" + key + "\":(\\[\\[[^a-z]*?\\]\\]|\\[[^\\[\\]]*\\]|[^,}]+)");
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (std::regex_search(line, m, re)) out.push_back(m[1]);
    }
    return out;
  }
  std::map<std::string, HostArray> weights(const std::string& name) const {
    return read_weights_h5((dir_ / name / "weights.h5").string());
  }
  std::string file(const std::string& rel) const { return slurp(dir_ / rel); }
  // A top-level integer of the exit memory report (run/memory.rank<r>.json), -1 if absent.
  int64_t exit_report_int(const std::string& run, int rank, const std::string& key) const {
    const std::string text = file(run + "/memory.rank" + std::to_string(rank) + ".json");
    const size_t at = text.find("\"" + key + "\":");
    return at == std::string::npos ? -1 : std::stoll(text.substr(at + key.size() + 3));
  }
  // The allocator's peak bytes of `category` at exit (run/memory.rank<r>.json), -1 if absent.
  int64_t exit_peak_bytes(const std::string& run, int rank, const std::string& category) const {
    const std::string text = file(run + "/memory.rank" + std::to_string(rank) + ".json");
    const size_t key = text.find("\"" + category + "\":", text.find("\"peak_bytes\":"));
    return key == std::string::npos ? -1 : std::stoll(text.substr(key + category.size() + 3));
  }

 private:
  fs::path dir_;
};

}  // namespace sy::testing
