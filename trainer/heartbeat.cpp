#include "trainer/heartbeat.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

namespace sy {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}
constexpr auto kInterval = std::chrono::milliseconds(500);
}  // namespace

Heartbeat::Heartbeat(const std::string& dir, int rank) : rank_(rank) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);  // a heartbeat that cannot be written only weakens the watchdog
  char name[32];
  std::snprintf(name, sizeof name, "/rank_%05d.json", rank);
  path_ = dir + name;
  tmp_ = path_ + ".tmp";
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  host_ = host;
  write_file();
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, kInterval);
      lock.unlock();
      write_file();
      lock.lock();
    }
  });
}

Heartbeat::~Heartbeat() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    phase_ = "finished";
  }
  cv_.notify_all();
  thread_.join();
  write_file();
}

void Heartbeat::set_step(int64_t steps_done) {
  std::lock_guard lock(mu_);
  step_ = steps_done;
}

void Heartbeat::set_phase(const char* phase) {
  std::lock_guard lock(mu_);
  phase_ = phase;
}

void Heartbeat::enter(const char* op, const std::string& group) {
  std::lock_guard lock(mu_);
  op_ = op;
  group_ = group;
  op_since_ = now_s();
}

void Heartbeat::leave() {
  std::lock_guard lock(mu_);
  op_ = "";
  group_.clear();
}

void Heartbeat::write_file() {
  char buf[512];
  {
    std::lock_guard lock(mu_);
    const double t = now_s();
    std::snprintf(buf, sizeof buf,
                  "{\"rank\":%d,\"pid\":%ld,\"host\":\"%s\",\"step\":%ld,\"phase\":\"%s\",\"op\":\"%s\",\"group\":\"%s\","
                  "\"op_s\":%.1f,\"time\":%.3f}\n",
                  rank_, long(getpid()), host_.c_str(), long(step_), phase_, op_, group_.c_str(),
                  *op_ ? t - op_since_ : 0.0, t);
  }
  if (std::FILE* f = std::fopen(tmp_.c_str(), "w")) {
    std::fputs(buf, f);
    std::fclose(f);
    std::rename(tmp_.c_str(), path_.c_str());
  }
}

}  // namespace sy
