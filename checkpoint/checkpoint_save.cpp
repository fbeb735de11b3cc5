// save_checkpoint and remove_stale_tmp: the commit protocol of docs/checkpoint-format.md.
#include <algorithm>
#include <csignal>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>

#include "checkpoint/checkpoint.h"
#include "checkpoint/shard_io.h"

namespace sy {

namespace fs = std::filesystem;

std::string checkpoints_dir(const std::string& out_dir) { return (fs::path(out_dir) / "checkpoints").string(); }

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

namespace {

// ---- fault injection (tests only; docs/checkpoint-format.md) -------------------------------

struct Faults {
  std::string kill_phase;  // SY_FAULT_CKPT_KILL
  int kill_rank = -1;      // SY_FAULT_CKPT_RANK
  int enospc_rank = -1;    // SY_FAULT_CKPT_ENOSPC
};

// SY_FAULT_CKPT_STEP=<s> limits the faults to the save of step s (default: every save). Under
// `switchyard run`, which numbers its attempts in SY_RUN_ATTEMPT, they fire only in the first
// SY_FAULT_ATTEMPTS attempts (default 1), so the restarted job can get past them.
Faults read_faults(int64_t step) {
  Faults f;
  const char* attempt = std::getenv("SY_RUN_ATTEMPT");
  const char* attempts = std::getenv("SY_FAULT_ATTEMPTS");
  if (attempt && std::atoll(attempt) >= (attempts ? std::atoll(attempts) : 1)) return f;
  if (const char* s = std::getenv("SY_FAULT_CKPT_STEP"); s && std::atoll(s) != step) return f;
  if (const char* k = std::getenv("SY_FAULT_CKPT_KILL")) f.kill_phase = k;
  if (const char* r = std::getenv("SY_FAULT_CKPT_RANK")) f.kill_rank = std::atoi(r);
  if (const char* e = std::getenv("SY_FAULT_CKPT_ENOSPC")) f.enospc_rank = std::atoi(e);
  return f;
}

void maybe_kill(const Faults& f, int rank, const char* phase) {
  if (f.kill_rank != rank || f.kill_phase != phase) return;
  std::fprintf(stderr, "rank %d: SY_FAULT_CKPT_KILL=%s: killing this rank\n", rank, phase);
  std::fflush(stderr);
  std::raise(SIGKILL);
}

// ---- agreement ---------------------------------------------------------------------------------

constexpr int64_t kMsgInts = 256;  // 1 KiB: one error line

// Collective. "" when every rank's `local_error` is empty; otherwise the same line on every rank:
// the lowest failing rank's error, and how many others failed. One all_reduce carries the flag, so
// a failure on any rank reaches every rank and none waits for a commit that will not come.
std::string agree(Communicator& world, const std::string& local_error) {
  const int n = world.size(), r = world.rank();
  int64_t v[2] = {local_error.empty() ? 0 : n - r, local_error.empty() ? 0 : 1};
  world.all_reduce(&v[0], 1, CommType::I64, ReduceOp::Max);
  if (v[0] == 0) return "";
  world.all_reduce(&v[1], 1, CommType::I64, ReduceOp::Sum);
  const int root = n - static_cast<int>(v[0]);
  std::vector<int32_t> buf(kMsgInts, 0);
  if (r == root) std::memcpy(buf.data(), local_error.data(), std::min<size_t>(local_error.size(), kMsgInts * 4 - 1));
  world.broadcast(buf.data(), kMsgInts, CommType::I32, root);
  std::string msg = "rank " + std::to_string(root) + ": " + reinterpret_cast<const char*>(buf.data());
  if (v[1] > 1) msg += " (and " + std::to_string(v[1] - 1) + " more rank(s) failed)";
  return msg;
}

// ---- gathering piece records to rank 0 ------------------------------------------------------------

std::string encode(const std::vector<TensorPiece>& pieces, const std::vector<PieceRecord>& recs) {
  std::ostringstream o;  // one piece per line, tab-separated; names hold neither (checked)
  for (size_t i = 0; i < pieces.size(); ++i) {
    o << pieces[i].name << '\t' << dtype_name(pieces[i].dtype) << '\t';
    for (int64_t d : pieces[i].global_shape) o << d << ',';
    o << '\t' << recs[i].file << '\t' << recs[i].dataset << '\t' << recs[i].offset << '\t' << recs[i].count << '\t'
      << recs[i].crc32c << '\n';
  }
  return o.str();
}

// Rank 0 gets every rank's encoded records, concatenated; other ranks get "".
std::string gather_to_root(Communicator& world, const std::string& mine) {
  const int n = world.size();
  int64_t words = static_cast<int64_t>((mine.size() + 3) / 4);
  std::vector<int64_t> all(n);
  world.all_gather(&words, all.data(), 1, CommType::I64);
  std::vector<int32_t> send(words, 0);
  std::memcpy(send.data(), mine.data(), mine.size());
  std::vector<int64_t> send_counts(n, 0), recv_counts(n, 0);
  send_counts[0] = words;
  int64_t total = 0;
  if (world.rank() == 0)
    for (int p = 0; p < n; ++p) total += recv_counts[p] = all[p];
  std::vector<int32_t> recv(total);
  world.all_to_all_v(send.data(), send_counts, recv.data(), recv_counts, CommType::I32);
  std::string out(reinterpret_cast<const char*>(recv.data()), recv.size() * 4);
  out.erase(std::remove(out.begin(), out.end(), '\0'), out.end());  // the padding
  return out;
}

Manifest build_manifest(const SaveRequest& req, int world_size, const std::string& records) {
  Manifest m;
  m.step = req.step;
  m.world_size = world_size;
  m.attrs = req.attrs;
  for (int r = 0; r < world_size; ++r) {
    char f[32];
    std::snprintf(f, sizeof f, "rank_%05d.h5", r);
    m.files.push_back(f);
  }
  std::map<std::string, TensorRecord> by_name;
  std::istringstream in(records);
  for (std::string line; std::getline(in, line);) {
    std::istringstream l(line);
    std::string name, dtype, shape, dim;
    PieceRecord p;
    std::getline(l, name, '\t');
    std::getline(l, dtype, '\t');
    std::getline(l, shape, '\t');
    std::getline(l, p.file, '\t');
    std::getline(l, p.dataset, '\t');
    l >> p.offset >> p.count >> p.crc32c;
    Shape s;
    std::istringstream sh(shape);
    while (std::getline(sh, dim, ',')) s.push_back(std::stoll(dim));
    auto [it, fresh] = by_name.try_emplace(name);
    TensorRecord& t = it->second;
    if (fresh) {
      t.name = name;
      t.dtype = dtype_from_name(dtype);
      t.shape = s;
    } else if (t.shape != s || dtype_name(t.dtype) != dtype) {
      throw std::runtime_error("tensor " + name + ": pieces disagree on the global shape or dtype (" + shape_str(s) +
                               " " + dtype + " vs " + shape_str(t.shape) + " " + dtype_name(t.dtype) + ")");
    }
    t.pieces.push_back(std::move(p));
  }
  for (auto& [name, t] : by_name) {
    std::sort(t.pieces.begin(), t.pieces.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
    m.tensors.push_back(std::move(t));
  }
  if (auto problems = audit_manifest(m); !problems.empty()) throw std::runtime_error(problems.front());
  return m;
}

// The request's own mistakes, found before anything touches the disk.
std::string check_request(const SaveRequest& req) {
  std::set<std::string> datasets;
  for (const TensorPiece& p : req.pieces) {
    if (p.name.empty() || p.name.find_first_of("/@\t\n,") != std::string::npos || p.name[0] == '.')
      return "invalid tensor name \"" + p.name + "\" (empty, or holds one of / @ , tab newline, or starts with '.')";
    if (p.offset < 0 || p.count < 0 || p.offset + p.count > shape_numel(p.global_shape))
      return "tensor " + p.name + ": piece [" + std::to_string(p.offset) + ", " + std::to_string(p.offset + p.count) +
             ") outside its global shape " + shape_str(p.global_shape);
    if (p.count > 0 && !p.data) return "tensor " + p.name + ": piece has no data";
    if (!datasets.insert(p.name + "@" + std::to_string(p.offset)).second)
      return "tensor " + p.name + ": two pieces at offset " + std::to_string(p.offset);
  }
  return "";
}

void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.flush();
  if (!f) throw std::runtime_error(path + ": write failed: " + std::strerror(errno));
  f.close();
  fsync_file(path);
}

// Out of the way first (one atomic rename, so a crash never leaves a half-deleted step_X/ that
// looks committed), then deleted; a leftover *.tmp is removed by remove_stale_tmp.
void remove_dir_atomically(const fs::path& dir, const char* why) {
  const fs::path gone = dir.string() + "." + why + ".tmp";
  fs::remove_all(gone);
  fs::rename(dir, gone);
  fs::remove_all(gone);
}

std::string read_latest(const fs::path& root) {
  std::ifstream f(root / "latest");
  std::string name;
  std::getline(f, name);
  return name;
}

void prune(const fs::path& root, int keep) {
  if (keep <= 0) return;
  const std::string latest = read_latest(root);
  std::vector<std::pair<int64_t, fs::path>> steps;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.size() == 13 && n.rfind("step_", 0) == 0 &&
        n.find_first_not_of("0123456789", 5) == std::string::npos)
      steps.emplace_back(std::stoll(n.substr(5)), e.path());
  }
  std::sort(steps.rbegin(), steps.rend());
  for (size_t i = static_cast<size_t>(keep); i < steps.size(); ++i)
    if (steps[i].second.filename().string() != latest) remove_dir_atomically(steps[i].second, "pruned");
}

}  // namespace

namespace {

struct SavePaths {
  fs::path root, final_dir, tmp;
  std::string what;  // the error prefix
};

SavePaths paths_of(const SaveRequest& req) {
  SavePaths p;
  p.root = checkpoints_dir(req.out_dir);
  p.final_dir = p.root / step_dir_name(req.step);
  p.tmp = p.final_dir.string() + ".tmp";
  p.what = "checkpoint step " + std::to_string(req.step) + " not saved: ";
  return p;
}

}  // namespace

// 1. Rank 0 makes a fresh step_X.tmp/ (a leftover from a crashed save of the same step goes).
void begin_save(Communicator& world, const SaveRequest& req) {
  const SavePaths p = paths_of(req);
  std::string err = check_request(req);
  if (world.rank() == 0 && err.empty()) {
    try {
      fs::create_directories(p.root);
      fs::remove_all(p.tmp);
      fs::create_directory(p.tmp);
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  if (std::string e = agree(world, err); !e.empty()) throw CheckpointError(p.what + e);
}

// 2. Every rank writes and fsyncs its shard file (no communication: safe on another thread).
ShardWrite write_shard(int rank, const SaveRequest& req) {
  const SavePaths p = paths_of(req);
  const Faults faults = read_faults(req.step);
  char file_name[32];
  std::snprintf(file_name, sizeof file_name, "rank_%05d.h5", rank);
  ShardWrite w;
  try {
    w.records = write_shard_file((p.tmp / file_name).string(), file_name, req.pieces, [&](size_t i) {
      if (i != req.pieces.size() / 2) return;  // mid-way through this rank's pieces
      maybe_kill(faults, rank, "writing");
      if (faults.enospc_rank == rank)
        throw std::system_error(ENOSPC, std::generic_category(), "writing (injected by SY_FAULT_CKPT_ENOSPC)");
    });
    if (rank == 0) fsync_dir(p.tmp.string());  // rank 0's own file entry; the others' are covered by step 3's fsync
  } catch (const std::exception& e) {
    w.error = e.what();
  }
  return w;
}

// 3. Agreement, then rank 0 commits: manifest last, the rename that makes it visible, `latest`.
void finish_save(Communicator& world, const SaveRequest& req, const ShardWrite& written) {
  const int rank = world.rank();
  const SavePaths p = paths_of(req);
  const Faults faults = read_faults(req.step);
  if (std::string e = agree(world, written.error); !e.empty()) {
    std::error_code ec;
    if (rank == 0) fs::remove_all(p.tmp, ec);  // every file is closed: the agreement came after
    throw CheckpointError(p.what + e);
  }
  const std::string records = gather_to_root(world, encode(req.pieces, written.records));
  maybe_kill(faults, rank, "before_manifest");
  std::string err;
  if (rank == 0) {
    try {
      write_text_file((p.tmp / "manifest.json").string(), build_manifest(req, world.size(), records).to_json());
      fsync_dir(p.tmp.string());
      maybe_kill(faults, rank, "before_rename");
      if (fs::exists(p.final_dir)) remove_dir_atomically(p.final_dir, "replaced");  // re-saving a step
      fs::rename(p.tmp, p.final_dir);
      fsync_dir(p.root.string());
      maybe_kill(faults, rank, "before_latest");
      write_text_file((p.root / "latest.tmp").string(), p.final_dir.filename().string() + "\n");
      fs::rename(p.root / "latest.tmp", p.root / "latest");
      fsync_dir(p.root.string());
      prune(p.root, req.keep);
    } catch (const std::exception& e) {
      err = e.what();
      std::error_code ec;
      fs::remove_all(p.tmp, ec);  // gone already if the rename happened
    }
  } else {
    // These phases are rank 0's; another rank named in them dies while waiting for its commit.
    maybe_kill(faults, rank, "before_rename");
    maybe_kill(faults, rank, "before_latest");
  }
  if (std::string e = agree(world, err); !e.empty()) throw CheckpointError(p.what + e);
}

void save_checkpoint(Communicator& world, const SaveRequest& req) {
  begin_save(world, req);
  finish_save(world, req, write_shard(world.rank(), req));
}

void remove_stale_tmp(Communicator& world, const std::string& out_dir) {
  world.barrier();  // nobody is still writing into a tmp directory of a save that failed
  std::string err;
  if (world.rank() == 0) {
    try {
      const fs::path root = checkpoints_dir(out_dir);
      if (fs::is_directory(root))
        for (const auto& e : fs::directory_iterator(root)) {
          const std::string n = e.path().filename().string();
          const bool tmp = n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0;
          if (tmp && (n.rfind("step_", 0) == 0 || n == "latest.tmp")) fs::remove_all(e.path());
        }
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  if (std::string e = agree(world, err); !e.empty()) throw CheckpointError("removing stale checkpoints: " + e);
}

}  // namespace sy
