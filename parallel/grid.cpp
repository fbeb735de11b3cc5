#include "parallel/grid.h"

#include <algorithm>
#include <sstream>

#include "engine/config_error.h"

namespace sy {

namespace {
constexpr const char* kDenseNames[4] = {"tp", "cp", "dp", "pp"};

struct Coords {
  int dense[4];   // tp, cp, dp, pp
  int expert[3];  // etp, ep, edp
};
}  // namespace

const char* group_name(GroupKind k) {
  switch (k) {
    case GroupKind::TP: return "tp";
    case GroupKind::CP: return "cp";
    case GroupKind::DP: return "dp";
    case GroupKind::PP: return "pp";
    case GroupKind::EP: return "ep";
    case GroupKind::ETP: return "etp";
    case GroupKind::EDP: return "edp";
    case GroupKind::DP_CP: return "dp-cp";
    default: return "?";
  }
}

int Group::index_of(int world_rank) const {
  auto it = std::find(ranks.begin(), ranks.end(), world_rank);
  return it == ranks.end() ? -1 : static_cast<int>(it - ranks.begin());
}

ProcessGrid ProcessGrid::make(const GridSizes& in, int world, int rank) {
  ProcessGrid g;
  g.sizes_ = in;
  g.world_ = world;
  g.rank_ = rank;
  GridSizes& s = g.sizes_;
  const std::pair<const char*, int> positive[] = {{"tp", s.tp}, {"cp", s.cp}, {"pp", s.pp}, {"ep", s.ep}, {"etp", s.etp}};
  for (auto& [name, v] : positive)
    if (v < 1) throw ConfigError("parallel." + std::string(name) + "=" + std::to_string(v) + " must be >= 1");
  const int fixed = s.tp * s.cp * s.pp;
  if (s.dp == 0) {
    if (world % fixed != 0)
      throw ConfigError("world size " + std::to_string(world) + " is not divisible by tp*cp*pp=" + std::to_string(fixed) +
                        "; launch a multiple of " + std::to_string(fixed) + " ranks or change parallel.tp/cp/pp");
    s.dp = world / fixed;
  }
  if (s.dp < 1 || fixed * s.dp != world)
    throw ConfigError("parallel layout tp*cp*dp*pp=" + std::to_string(fixed * s.dp) + " does not match the world size " +
                      std::to_string(world) + "; leave parallel.dp out to derive it, or launch that many ranks");
  const int inner = s.tp * s.cp * s.dp;
  if (inner % (s.etp * s.ep) != 0)
    throw ConfigError("parallel.etp*ep=" + std::to_string(s.etp * s.ep) + " does not divide tp*cp*dp=" +
                      std::to_string(inner) + "; choose ep (and etp) that divide the ranks of a pipeline stage");
  g.edp_ = inner / (s.etp * s.ep);

  // Parse the order: a permutation of tp, cp, dp, pp separated by '-'.
  std::vector<std::string> parts;
  std::stringstream ss(s.order);
  for (std::string p; std::getline(ss, p, '-');) parts.push_back(p);
  bool seen[4] = {};
  if (parts.size() != 4)
    throw ConfigError("parallel.order=\"" + s.order + "\" must name tp, cp, dp and pp once each, fastest first (e.g. \"tp-cp-dp-pp\")");
  for (int i = 0; i < 4; ++i) {
    int d = -1;
    for (int j = 0; j < 4; ++j)
      if (parts[i] == kDenseNames[j]) d = j;
    if (d < 0 || seen[d])
      throw ConfigError("parallel.order=\"" + s.order + "\" must name tp, cp, dp and pp once each, fastest first (e.g. \"tp-cp-dp-pp\")");
    seen[d] = true;
    g.order_[i] = d;
  }
  if (rank < 0 || rank >= world) throw ConfigError("rank " + std::to_string(rank) + " outside world " + std::to_string(world));
  for (int k = 0; k < static_cast<int>(GroupKind::kCount); ++k) g.groups_[k] = g.group_of(static_cast<GroupKind>(k), rank);
  return g;
}

namespace {
// Coordinates of a rank: dense by the order string; expert by refolding the rank's index among
// the non-pp dims (taken in the same order) as etp fastest, then ep, then edp.
Coords coords_of(int rank, const std::array<int, 4>& order, const int size[4], int etp, int ep) {
  Coords c{};
  int r = rank;
  for (int i = 0; i < 4; ++i) {
    c.dense[order[i]] = r % size[order[i]];
    r /= size[order[i]];
  }
  int inner = 0, stride = 1;
  for (int i = 0; i < 4; ++i) {
    if (order[i] == 3) continue;
    inner += c.dense[order[i]] * stride;
    stride *= size[order[i]];
  }
  c.expert[0] = inner % etp;
  c.expert[1] = inner / etp % ep;
  c.expert[2] = inner / (etp * ep);
  return c;
}
}  // namespace

Group ProcessGrid::group_of(GroupKind k, int rank) const {
  const int size[4] = {sizes_.tp, sizes_.cp, sizes_.dp, sizes_.pp};
  const Coords me = coords_of(rank, order_, size, sizes_.etp, sizes_.ep);
  Group g{k, {}};
  for (int r = 0; r < world_; ++r) {
    const Coords c = coords_of(r, order_, size, sizes_.etp, sizes_.ep);
    bool same = true;
    auto keep_dense = [&](int d) { same = same && c.dense[d] == me.dense[d]; };
    auto keep_expert = [&](int d) { same = same && c.expert[d] == me.expert[d]; };
    switch (k) {
      case GroupKind::TP: keep_dense(1), keep_dense(2), keep_dense(3); break;
      case GroupKind::CP: keep_dense(0), keep_dense(2), keep_dense(3); break;
      case GroupKind::DP: keep_dense(0), keep_dense(1), keep_dense(3); break;
      case GroupKind::PP: keep_dense(0), keep_dense(1), keep_dense(2); break;
      case GroupKind::DP_CP: keep_dense(0), keep_dense(3); break;
      case GroupKind::ETP: keep_dense(3), keep_expert(1), keep_expert(2); break;
      case GroupKind::EP: keep_dense(3), keep_expert(0), keep_expert(2); break;
      case GroupKind::EDP: keep_dense(3), keep_expert(0), keep_expert(1); break;
      default: break;
    }
    if (same) g.ranks.push_back(r);
  }
  return g;
}

std::vector<Group> ProcessGrid::all_groups(GroupKind k) const {
  std::vector<Group> out;
  std::vector<bool> covered(world_, false);
  for (int r = 0; r < world_; ++r) {
    if (covered[r]) continue;
    Group g = group_of(k, r);
    for (int m : g.ranks) covered[m] = true;
    out.push_back(std::move(g));
  }
  return out;
}

std::string ProcessGrid::describe() const {
  std::ostringstream o;
  const int size[4] = {sizes_.tp, sizes_.cp, sizes_.dp, sizes_.pp};
  o << "grid tp=" << sizes_.tp << " cp=" << sizes_.cp << " dp=" << sizes_.dp << " pp=" << sizes_.pp
    << " | ep=" << sizes_.ep << " etp=" << sizes_.etp << " edp=" << edp_ << " | order " << sizes_.order << "\n";
  for (int r = 0; r < world_; ++r) {
    const Coords c = coords_of(r, order_, size, sizes_.etp, sizes_.ep);
    o << "rank " << r << ": tp " << c.dense[0] << " cp " << c.dense[1] << " dp " << c.dense[2] << " pp " << c.dense[3]
      << " | etp " << c.expert[0] << " ep " << c.expert[1] << " edp " << c.expert[2] << "\n";
  }
  return o.str();
}

}  // namespace sy
