// The recipe's [parallel] section: the sizes of the process grid and the data-parallel options.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy {

struct ParallelConfig {
  int64_t tp = 1, cp = 1, pp = 1, ep = 1, etp = 1;
  int64_t vpp = 1;                 // virtual pipeline stages per rank (interleaved 1F1B when > 1)
  std::vector<int64_t> pp_layers;  // layers per pipeline chunk (pp * vpp of them); empty: balanced
  int64_t dp = 0;                  // 0: derived from the world size
  int64_t zero = 0;                // 0: replicated optimizer; 1: sharded optimizer state; 2: + sharded gradients
  bool sp = false;                 // sequence parallelism over the TP group (needs tp > 1 to matter)
  std::string order = "tp-cp-dp-pp";
  double timeout_s = 600;          // a collective that takes longer fails on every surviving rank
  double bucket_mb = 25;           // gradient all-reduce bucket size
};

}  // namespace sy
