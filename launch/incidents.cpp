#include "launch/incidents.h"

#include <cstdio>
#include <ctime>
#include <fstream>
#include <stdexcept>

#include "checkpoint/mini_json.h"

namespace sy {

std::string to_json_line(const Incident& i) {
  char when[32];
  const std::time_t t = std::time_t(i.time);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  std::string s = std::string("{\"time\":\"") + when + "\",\"rank\":" + std::to_string(i.rank) +
                  ",\"cause\":" + json::quote(i.cause) + ",\"step_reached\":" + std::to_string(i.step_reached) +
                  ",\"resume_step\":" + std::to_string(i.resume_step) + ",\"steps_lost\":" + std::to_string(i.steps_lost()) +
                  ",\"restart\":" + std::to_string(i.restart) + ",\"ranks\":[";
  for (size_t k = 0; k < i.ranks.size(); ++k) s += (k ? "," : "") + json::quote(i.ranks[k]);
  return s + "]}";
}

void append_incident(const std::string& path, const Incident& i) {
  std::ofstream out(path, std::ios::app);
  out << to_json_line(i) << "\n";
  if (!out.flush()) throw std::runtime_error(path + ": cannot append the incident record; check train.out_dir");
}

std::string readable(const Incident& i) {
  std::string who = i.rank >= 0 ? "rank " + std::to_string(i.rank) : std::string("the job");
  return who + " " + i.cause + " at step " + std::to_string(i.step_reached) + " (last good checkpoint: step " +
         std::to_string(i.resume_step) + ", " + std::to_string(i.steps_lost()) + " step(s) lost)";
}

}  // namespace sy
