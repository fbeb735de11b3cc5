#include "cli/ckpt_commands.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "engine/config_error.h"

namespace sy {

namespace {

namespace fs = std::filesystem;

std::string resolve(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) throw ConfigError(path + ": no such checkpoint directory");
  if (fs::exists(fs::path(path) / "manifest.json", ec)) return path;
  for (const fs::path& root : {fs::path(path), fs::path(path) / "checkpoints"}) {
    std::ifstream f(root / "latest");
    std::string name;
    if (std::getline(f, name) && !name.empty()) return (root / name).string();
  }
  throw ConfigError(path + ": neither a checkpoint (no manifest.json) nor a directory with a `latest` checkpoint");
}

// Attribute values (a whole recipe) print on one line, newlines shown as \n.
std::string one_line(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '\n' ? std::string("\\n") : std::string(1, c);
  return out;
}

}  // namespace

int run_ckpt_inspect(const std::string& path, const std::string& dump_name) {
  const CheckpointReader r(resolve(path));
  if (!dump_name.empty()) {
    const DType dt = r.dtype(dump_name);  // ConfigError for an unknown name
    const int64_t n = shape_numel(r.shape(dump_name));
    if (dt == DType::I32) {
      std::vector<int32_t> v(n);
      r.read(dump_name, 0, n, v.data(), dt);
      for (int32_t x : v) std::printf("%d\n", x);
    } else {
      // Printed at the precision that round-trips each dtype exactly.
      std::vector<double> v(n);
      r.read(dump_name, 0, n, v.data(), DType::F64);
      for (double x : v) std::printf(dt == DType::F32 ? "%.9g\n" : "%.17g\n", x);
    }
    return 0;
  }
  const Manifest& m = r.manifest();
  std::printf("checkpoint %s\n", r.dir().c_str());
  std::printf("step %lld\nformat_version %lld\nworld_size %lld\n", static_cast<long long>(m.step),
              static_cast<long long>(m.format_version), static_cast<long long>(m.world_size));
  for (const auto& [k, v] : m.attrs) std::printf("attr %s = %s\n", k.c_str(), one_line(v).c_str());
  std::printf("tensors %zu\n", m.tensors.size());
  for (const TensorRecord& t : m.tensors)
    std::printf("  %s %s %s pieces=%zu\n", t.name.c_str(), dtype_name(t.dtype), shape_str(t.shape).c_str(),
                t.pieces.size());
  return 0;
}

int run_ckpt_verify(const std::string& path) {
  const std::string dir = resolve(path);
  const std::vector<std::string> problems = CheckpointReader(dir).verify();
  for (const std::string& p : problems) std::fprintf(stderr, "switchyard: ckpt verify: %s: %s\n", dir.c_str(), p.c_str());
  if (problems.empty()) std::printf("%s: OK\n", dir.c_str());
  return problems.empty() ? 0 : 1;
}

}  // namespace sy
