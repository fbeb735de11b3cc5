#include "trainer/metrics_log.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/config_error.h"
#include "engine/memory.h"

namespace sy {

namespace {
std::string num(double x) {
  if (!std::isfinite(x)) return "null";  // JSON has no NaN or infinity
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return buf;
}
std::string duration(double s) {
  char buf[32];
  const int64_t t = int64_t(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", long(t / 3600), long(t / 60 % 60));
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", long(t / 60), long(t % 60));
  return buf;
}
}  // namespace

MetricsLog::MetricsLog(const std::string& path) {
  f_ = std::fopen(path.c_str(), "a");
  if (!f_)
    throw ConfigError(path + ": cannot write metrics (" + std::strerror(errno) +
                      "); set train.out_dir to a writable directory");
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::write(const StepRecord& r) {
  std::ostringstream o;
  o << "{\"step\":" << r.step << ",\"loss\":" << num(r.loss) << ",\"aux_loss\":" << num(r.aux_loss)
    << ",\"z_loss\":" << num(r.z_loss) << ",\"lr\":" << num(r.lr) << ",\"grad_norm\":" << num(r.grad_norm)
    << ",\"tokens_per_s\":" << num(r.tokens_per_s) << ",\"mfu\":" << num(r.mfu)
    << ",\"expert_share_min\":" << num(r.expert_share_min) << ",\"expert_share_max\":" << num(r.expert_share_max)
    << ",\"dropped_share\":" << num(r.dropped_share) << ",\"expert_imbalance\":" << num(r.expert_imbalance);
  if (r.dropped_digest >= 0) o << ",\"dropped_digest\":" << r.dropped_digest;
  if (r.tp_bytes >= 0) o << ",\"tp_bytes\":" << r.tp_bytes;
  if (r.etp_bytes >= 0) o << ",\"etp_bytes\":" << r.etp_bytes;
  if (r.buckets >= 0) o << ",\"grad_buckets\":[" << r.buckets_in_backward << "," << r.buckets << "]";
  if (r.a2a_bytes >= 0) o << ",\"a2a_bytes\":" << r.a2a_bytes << ",\"a2a_bytes_routing\":" << r.a2a_bytes_routing
                         << ",\"a2a_seconds\":" << num(r.a2a_seconds);
  for (auto [key, v] : {std::pair{"a2a_bytes_by_rank", &r.a2a_bytes_by_rank},
                        std::pair{"a2a_routing_by_rank", &r.a2a_routing_by_rank},
                        std::pair{"ep_other_bytes_by_rank", &r.ep_other_bytes_by_rank},
                        std::pair{"pp_in_flight_by_stage", &r.pp_in_flight_by_stage},
                        std::pair{"pp_kept_inputs_by_stage", &r.pp_kept_inputs_by_stage},
                        std::pair{"pp_recomputes_by_stage", &r.pp_recomputes_by_stage}}) {
    if (v->empty()) continue;
    o << ",\"" << key << "\":[";
    for (size_t i = 0; i < v->size(); ++i) o << (i ? "," : "") << (*v)[i];
    o << "]";
  }
  if (!r.mem_peak_bytes.empty()) {
    o << ",\"mem_peak_bytes\":{";
    for (size_t c = 0; c < r.mem_peak_bytes.size(); ++c) {
      o << (c ? "," : "") << "\"" << mem_category_name(MemCategory(c)) << "\":[";
      for (size_t q = 0; q < r.mem_peak_bytes[c].size(); ++q) o << (q ? "," : "") << r.mem_peak_bytes[c][q];
      o << "]";
    }
    o << "},\"mem_peak_total_bytes\":[";
    for (size_t q = 0; q < r.mem_peak_total_bytes.size(); ++q) o << (q ? "," : "") << r.mem_peak_total_bytes[q];
    o << "]";
  }
  if (!r.pp_idle_by_stage.empty()) {
    o << ",\"pp_idle_by_stage\":[";
    for (size_t i = 0; i < r.pp_idle_by_stage.size(); ++i) o << (i ? "," : "") << num(r.pp_idle_by_stage[i]);
    o << "]";
  }
  if (!r.expert_tokens.empty()) {
    o << ",\"expert_tokens\":[";
    for (size_t l = 0; l < r.expert_tokens.size(); ++l) {
      o << (l ? ",[" : "[");
      for (size_t e = 0; e < r.expert_tokens[l].size(); ++e) o << (e ? "," : "") << r.expert_tokens[l][e];
      o << "]";
    }
    o << "]";
  }
  if (r.val_loss) o << ",\"val_loss\":" << num(*r.val_loss);
  if (r.skipped) o << ",\"skipped\":true";
  if (r.skipped_steps > 0) o << ",\"skipped_steps\":" << r.skipped_steps << ",\"rollbacks\":" << r.rollbacks;
  o << "}\n";
  const std::string s = o.str();
  std::fwrite(s.data(), 1, s.size(), f_);
  std::fflush(f_);
}

std::string progress_line(const StepRecord& r) {
  char buf[512];
  int n = std::snprintf(buf, sizeof buf,
                        "step %ld/%ld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | MFU %.1f%%",
                        long(r.step), long(r.total_steps), r.loss, r.lr, r.grad_norm, r.tokens_per_s, 100 * r.mfu);
  if (!r.expert_tokens.empty())
    n += std::snprintf(buf + n, sizeof buf - n, " | experts min %.3f max %.3f imb %.2f drop %.1f%%", r.expert_share_min,
                       r.expert_share_max, r.expert_imbalance, 100 * r.dropped_share);
  if (r.val_loss) n += std::snprintf(buf + n, sizeof buf - n, " | val %.4f", *r.val_loss);
  if (r.skipped) n += std::snprintf(buf + n, sizeof buf - n, " | SKIPPED: non-finite loss or gradient norm");
  if (r.skipped_steps > 0)
    n += std::snprintf(buf + n, sizeof buf - n, " | bad steps %ld, rollbacks %ld", long(r.skipped_steps), long(r.rollbacks));
  std::snprintf(buf + n, sizeof buf - n, " | ETA %s", duration(r.eta_s).c_str());
  return buf;
}

void keep_records_up_to(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    const auto at = line.find("\"step\":");
    if (at != std::string::npos && std::stoll(line.substr(at + 7)) <= step) kept += line + "\n";
  }
  in.close();
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << kept;
  std::filesystem::rename(tmp, path);
}

void record_memory_peaks(Communicator& world, const MemoryCounters& mem, StepRecord& rec) {
  const size_t k = MemoryCounters::kN + 1, n = size_t(world.size());
  std::vector<int64_t> mine(k), all(k * n);
  for (int c = 0; c < MemoryCounters::kN; ++c) mine[size_t(c)] = int64_t(mem.peak[c]);
  mine.back() = int64_t(mem.total_peak);
  world.all_gather(mine.data(), all.data(), int64_t(k), CommType::I64);
  rec.mem_peak_bytes.assign(MemoryCounters::kN, std::vector<int64_t>(n));
  rec.mem_peak_total_bytes.resize(n);
  for (size_t q = 0; q < n; ++q) {
    for (size_t c = 0; c + 1 < k; ++c) rec.mem_peak_bytes[c][q] = all[q * k + c];
    rec.mem_peak_total_bytes[q] = all[q * k + k - 1];
  }
}

void record_pipeline_stats(Communicator& pp, const PipeStepStats& st, StepRecord& rec) {
  const double mine[4] = {st.idle_fraction, double(st.max_in_flight), double(st.max_kept_inputs), double(st.recomputes)};
  std::vector<double> all(4 * size_t(pp.size()));
  pp.all_gather(mine, all.data(), 4, CommType::F64);
  for (size_t q = 0; q < size_t(pp.size()); ++q) {
    rec.pp_idle_by_stage.push_back(all[4 * q]);
    rec.pp_in_flight_by_stage.push_back(int64_t(all[4 * q + 1]));
    rec.pp_kept_inputs_by_stage.push_back(int64_t(all[4 * q + 2]));
    rec.pp_recomputes_by_stage.push_back(int64_t(all[4 * q + 3]));
  }
}

}  // namespace sy
