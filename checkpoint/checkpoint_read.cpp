// CheckpointReader and find_resume_checkpoint.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/shard_io.h"
#include "engine/config_error.h"

namespace sy {

namespace fs = std::filesystem;

CheckpointReader::CheckpointReader(const std::string& step_dir) : dir_(step_dir) {
  const fs::path mpath = fs::path(step_dir) / "manifest.json";
  std::ifstream f(mpath, std::ios::binary);
  if (!f)
    throw ConfigError(step_dir + ": not a committed checkpoint (no manifest.json); pass a step_XXXXXXXX directory");
  std::ostringstream text;
  text << f.rdbuf();
  try {
    m_ = Manifest::from_json(text.str());
  } catch (const std::exception& e) {
    throw ConfigError(mpath.string() + ": damaged manifest: " + e.what());
  }
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  for (const TensorRecord& t : m_.tensors) out.push_back(t.name);
  return out;
}

bool CheckpointReader::has(const std::string& name) const {
  return std::any_of(m_.tensors.begin(), m_.tensors.end(), [&](const TensorRecord& t) { return t.name == name; });
}

const TensorRecord& CheckpointReader::tensor(const std::string& name) const {
  for (const TensorRecord& t : m_.tensors)
    if (t.name == name) return t;
  throw ConfigError(dir_ + ": no tensor named \"" + name + "\" in the checkpoint; `switchyard ckpt inspect " + dir_ +
                    "` lists them");
}

Shape CheckpointReader::shape(const std::string& name) const { return tensor(name).shape; }
DType CheckpointReader::dtype(const std::string& name) const { return tensor(name).dtype; }

namespace {

// The piece's bytes after checking its CRC32C; CheckpointError naming the tensor and file.
std::vector<std::byte> load_piece(const std::string& dir, const TensorRecord& t, const PieceRecord& p) {
  std::vector<std::byte> bytes;
  const std::string where = "tensor " + t.name + " (" + p.file + ", dataset " + p.dataset + "): ";
  try {
    bytes = read_piece_bytes((fs::path(dir) / p.file).string(), p.dataset, t.dtype, p.count);
  } catch (const std::exception& e) {
    throw CheckpointError(where + "cannot read: " + e.what());
  }
  const uint32_t crc = crc32c(bytes.data(), bytes.size());
  if (crc != p.crc32c) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "CRC32C mismatch (stored %08x, computed %08x): the data is damaged", p.crc32c, crc);
    throw CheckpointError(where + buf);
  }
  return bytes;
}

template <class To, class From>
void convert(const std::byte* src, int64_t n, std::byte* dst) {
  for (int64_t i = 0; i < n; ++i) {
    From v;
    std::memcpy(&v, src + i * sizeof(From), sizeof(From));
    const To w = static_cast<To>(v);
    std::memcpy(dst + i * sizeof(To), &w, sizeof(To));
  }
}

}  // namespace

void CheckpointReader::read(const std::string& name, int64_t offset, int64_t count, void* out, DType want) const {
  const TensorRecord& t = tensor(name);
  if (offset < 0 || count < 0 || offset + count > shape_numel(t.shape))
    throw CheckpointError("tensor " + name + ": read of [" + std::to_string(offset) + ", " +
                          std::to_string(offset + count) + ") outside its " +
                          std::to_string(shape_numel(t.shape)) + " elements");
  if (t.dtype != want && (t.dtype == DType::I32 || want == DType::I32))
    throw CheckpointError(std::string("tensor ") + name + " is " + dtype_name(t.dtype) + ", cannot read it as " +
                          dtype_name(want));
  auto* dst = static_cast<std::byte*>(out);
  const size_t in_size = dtype_size(t.dtype), out_size = dtype_size(want);
  int64_t pos = offset;  // next element still to fill; pieces are sorted by offset
  const int64_t end = offset + count;
  for (const PieceRecord& p : t.pieces) {
    if (pos >= end) break;
    if (p.offset + p.count <= pos || p.count == 0) continue;
    if (p.offset > pos) break;  // a gap: reported below
    const std::vector<std::byte> bytes = load_piece(dir_, t, p);
    const int64_t from = pos - p.offset, n = std::min(end, p.offset + p.count) - pos;
    const std::byte* src = bytes.data() + from * in_size;
    std::byte* to = dst + (pos - offset) * out_size;
    if (t.dtype == want) std::memcpy(to, src, n * in_size);
    else if (want == DType::F64) convert<double, float>(src, n, to);
    else convert<float, double>(src, n, to);
    pos += n;
  }
  if (pos < end)
    throw CheckpointError("tensor " + name + ": elements from " + std::to_string(pos) +
                          " are in no piece of the checkpoint (incomplete)");
}

std::vector<std::string> CheckpointReader::verify() const {
  std::vector<std::string> problems = audit_manifest(m_);
  // Missing or truncated files first, so one damaged file is one clear line, not one per piece.
  std::set<std::string> bad_files;
  for (const std::string& file : m_.files) {
    const fs::path p = fs::path(dir_) / file;
    std::error_code ec;
    if (!fs::is_regular_file(p, ec)) {
      problems.push_back("file " + file + ": missing from " + dir_);
      bad_files.insert(file);
    }
  }
  for (const TensorRecord& t : m_.tensors)
    for (const PieceRecord& p : t.pieces) {
      if (bad_files.count(p.file)) continue;
      try {
        load_piece(dir_, t, p);
      } catch (const CheckpointError& e) {
        problems.push_back(e.what());
      }
    }
  return problems;
}

std::string find_resume_checkpoint(const std::string& out_dir) {
  const fs::path root = checkpoints_dir(out_dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return "";
  std::vector<std::string> order;
  {
    std::ifstream f(root / "latest");
    std::string latest;
    if (std::getline(f, latest) && !latest.empty()) order.push_back(latest);
  }
  std::vector<std::string> committed;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.size() == 13 && n.rfind("step_", 0) == 0 &&
        n.find_first_not_of("0123456789", 5) == std::string::npos)
      committed.push_back(n);
  }
  std::sort(committed.rbegin(), committed.rend());  // zero-padded: newest first
  for (const std::string& n : committed)
    if (order.empty() || n != order.front()) order.push_back(n);
  for (const std::string& n : order) {
    const std::string dir = (root / n).string();
    std::string why;
    try {
      const std::vector<std::string> problems = CheckpointReader(dir).verify();
      if (problems.empty()) return dir;
      why = problems.front() + (problems.size() > 1 ? " (+" + std::to_string(problems.size() - 1) + " more)" : "");
    } catch (const std::exception& e) {
      why = e.what();
    }
    std::fprintf(stderr, "switchyard: warning: checkpoint %s fails verification (%s); trying an older one\n",
                 dir.c_str(), why.c_str());
  }
  return "";
}

}  // namespace sy
