// The process grid: which ranks form each parallel group, computed in one place from the sizes
// and a rank order, and passed around as a value (there is no global parallel state).
//
// Dense part:  world = tp * cp * dp * pp, ranks laid out by `order` (fastest-varying first;
//              default "tp-cp-dp-pp": TP neighbours are consecutive ranks, so they share a node).
// Expert part: the same tp * cp * dp ranks of each pipeline stage are refolded as
//              etp * ep * edp (MoE "parallel folding"), etp fastest, so EP groups are also
//              neighbouring ranks.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace sy {

struct GridSizes {
  int tp = 1, cp = 1, dp = 0, pp = 1;  // dp 0: derived from the world size
  int ep = 1, etp = 1;
  std::string order = "tp-cp-dp-pp";
};

enum class GroupKind : int { TP, CP, DP, PP, EP, ETP, EDP, DP_CP, kCount };
const char* group_name(GroupKind k);

struct Group {
  GroupKind kind;
  std::vector<int> ranks;  // world ranks, ascending; this rank's index is its rank in the group
  int index_of(int world_rank) const;  // -1 if absent
  int size() const { return static_cast<int>(ranks.size()); }
};

class ProcessGrid {
 public:
  // Validates the sizes against the world (ConfigError naming the key and the fix) and builds
  // every group this rank belongs to.
  static ProcessGrid make(const GridSizes& sizes, int world, int rank);

  int world() const { return world_; }
  int rank() const { return rank_; }
  const GridSizes& sizes() const { return sizes_; }  // dp resolved
  int edp() const { return edp_; }
  const Group& group(GroupKind k) const { return groups_[static_cast<int>(k)]; }
  int coord(GroupKind k) const { return group(k).index_of(rank_); }
  // Every group of one kind across the whole world (for tests and for describing the layout).
  std::vector<Group> all_groups(GroupKind k) const;
  // A text picture of the layout, one line per rank.
  std::string describe() const;

 private:
  Group group_of(GroupKind k, int rank) const;
  GridSizes sizes_;
  int world_ = 1, rank_ = 0, edp_ = 1;
  std::array<int, 4> order_{};  // dense dims (0 tp, 1 cp, 2 dp, 3 pp), fastest first
  std::array<Group, static_cast<int>(GroupKind::kCount)> groups_;
};

}  // namespace sy
