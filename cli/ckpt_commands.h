// `switchyard ckpt inspect` and `switchyard ckpt verify`.
#pragma once

#include <string>

namespace sy {

// PATH may be a step directory, a checkpoints/ directory or a run's out_dir (the last two mean
// the checkpoint `latest` names). Bad paths throw ConfigError.
int run_ckpt_inspect(const std::string& path, const std::string& dump_name);
// 0 when verify() finds nothing, 1 after printing each problem on stderr.
int run_ckpt_verify(const std::string& path);

}  // namespace sy
