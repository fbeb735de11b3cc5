#include "launch/heartbeats.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace sy {

namespace {
// The raw text of "key":VALUE in one line of the heartbeat format (strings unquoted; the writer
// never puts quotes or commas inside its values). nullopt-like "" with found=false when absent.
bool field(const std::string& line, const std::string& key, std::string& out) {
  const std::string k = "\"" + key + "\":";
  const size_t at = line.find(k);
  if (at == std::string::npos) return false;
  size_t b = at + k.size(), e;
  if (b < line.size() && line[b] == '"') {
    e = line.find('"', ++b);
  } else {
    e = line.find_first_of(",}", b);
  }
  if (e == std::string::npos) return false;
  out = line.substr(b, e - b);
  return true;
}
}  // namespace

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<RankBeat> read_heartbeats(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<RankBeat> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("rank_", 0) != 0 || e.path().extension() != ".json") continue;
    std::ifstream in(e.path());
    std::string line;
    if (!std::getline(in, line)) continue;
    RankBeat b;
    std::string v;
    try {
      if (!field(line, "rank", v)) continue;
      b.rank = std::stoi(v);
      if (field(line, "pid", v)) b.pid = std::stol(v);
      if (field(line, "step", v)) b.step = std::stoll(v);
      if (field(line, "op_s", v)) b.op_s = std::stod(v);
      if (field(line, "time", v)) b.time = std::stod(v);
    } catch (const std::exception&) {
      continue;  // a torn or foreign file: ignore it this round
    }
    field(line, "host", b.host);
    field(line, "phase", b.phase);
    field(line, "op", b.op);
    field(line, "group", b.group);
    out.push_back(b);
  }
  std::sort(out.begin(), out.end(), [](const RankBeat& a, const RankBeat& b) { return a.rank < b.rank; });
  return out;
}

std::string describe(const RankBeat& b, double now, double stale_s) {
  char buf[512];
  const double age = now - b.time;
  std::string where = "phase " + b.phase;
  if (!b.op.empty()) {
    char w[160];
    std::snprintf(w, sizeof w, ", waiting in %s on group %s for %.1f s", b.op.c_str(), b.group.c_str(), b.op_s + std::max(0.0, age));
    where += w;
  }
  std::snprintf(buf, sizeof buf, "rank %d (pid %ld on %s): step %ld, %s, heartbeat %.1f s old%s", b.rank, b.pid,
                b.host.c_str(), long(b.step), where.c_str(), age, age > stale_s ? " (not responding)" : "");
  return buf;
}

int suspect_of_hang(const std::vector<RankBeat>& beats, double now, double stale_s) {
  if (beats.empty()) return -1;
  for (const RankBeat& b : beats)
    if (now - b.time > stale_s) return b.rank;
  bool someone_waits = false;
  for (const RankBeat& b : beats) someone_waits |= !b.op.empty();
  if (someone_waits)
    for (const RankBeat& b : beats)
      if (b.op.empty()) return b.rank;
  const RankBeat* behind = &beats.front();
  for (const RankBeat& b : beats)
    if (b.step < behind->step) behind = &b;
  return behind->rank;
}

}  // namespace sy
