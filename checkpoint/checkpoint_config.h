// When and how a run checkpoints and resumes: the recipe's [checkpoint] section.
#pragma once

#include <cstdint>
#include <string>

namespace sy {

struct CheckpointConfig {
  int64_t every_steps = 0;      // 0: no periodic checkpoints (a clean stop still saves when > 0)
  int64_t keep = 3;             // newest checkpoints kept; the one being loaded is never deleted
  std::string resume = "auto";  // auto: newest checkpoint that verifies, if any | none | a step directory
  bool async = false;           // write in the background while training goes on (trainer/checkpoint_writer.h)
  std::string on_failure = "stop";  // a save that fails on any rank: stop | continue (training goes on)
};

}  // namespace sy
