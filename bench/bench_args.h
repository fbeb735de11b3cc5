// The command line every training benchmark takes: RECIPE [--steps N] [--set section.key=value ...].
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace sy::bench {

struct BenchArgs {
  std::string recipe;
  int steps = 0;
  std::vector<std::string> sets;
};

// Null (after printing the usage line) when the recipe is missing.
inline std::optional<BenchArgs> parse_bench_args(int argc, char** argv, const char* program, int default_steps) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s RECIPE [--steps N] [--set section.key=value ...]\n", program);
    return std::nullopt;
  }
  BenchArgs a{argv[1], default_steps, {}};
  for (int i = 2; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--steps") && i + 1 < argc) a.steps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--set") && i + 1 < argc) a.sets.push_back(argv[++i]);
  }
  return a;
}

}  // namespace sy::bench
