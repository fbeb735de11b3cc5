// The process grid as a pure function: group sizes, members, partitions, contiguity.
#include <gtest/gtest.h>

#include <set>

#include "engine/config_error.h"
#include "parallel/grid.h"

namespace sy {
namespace {

struct Shape6 {
  int world, tp, cp, dp, pp, ep, etp;
};

void check_grid(const Shape6& s) {
  GridSizes gs{s.tp, s.cp, s.dp, s.pp, s.ep, s.etp, "tp-cp-dp-pp"};
  const int edp = s.tp * s.cp * s.dp / (s.ep * s.etp);
  const std::pair<GroupKind, int> expected[] = {
      {GroupKind::TP, s.tp}, {GroupKind::CP, s.cp},   {GroupKind::DP, s.dp},  {GroupKind::PP, s.pp},
      {GroupKind::EP, s.ep}, {GroupKind::ETP, s.etp}, {GroupKind::EDP, edp}, {GroupKind::DP_CP, s.dp * s.cp}};
  for (int r = 0; r < s.world; ++r) {
    const ProcessGrid g = ProcessGrid::make(gs, s.world, r);
    for (auto [kind, size] : expected) {
      const Group& grp = g.group(kind);
      ASSERT_EQ(grp.size(), size) << group_name(kind) << " rank " << r;
      EXPECT_GE(grp.index_of(r), 0);
      // Every member of my group sees the same group.
      for (int m : grp.ranks) EXPECT_EQ(ProcessGrid::make(gs, s.world, m).group(kind).ranks, grp.ranks);
    }
    // Default order: TP and EP (with etp) groups are runs of neighbouring ranks.
    const auto& tp = g.group(GroupKind::TP).ranks;
    for (size_t i = 1; i < tp.size(); ++i) EXPECT_EQ(tp[i], tp[i - 1] + 1);
    const auto& ep = g.group(GroupKind::EP).ranks;
    for (size_t i = 1; i < ep.size(); ++i) EXPECT_EQ(ep[i], ep[i - 1] + s.etp);
    // A rank's (tp, cp, dp, pp) coordinates identify it uniquely, and so do (etp, ep, edp, pp).
  }
  const ProcessGrid g0 = ProcessGrid::make(gs, s.world, 0);
  for (auto [kind, size] : expected) {
    std::multiset<int> seen;
    for (const Group& grp : g0.all_groups(kind)) seen.insert(grp.ranks.begin(), grp.ranks.end());
    ASSERT_EQ(int(seen.size()), s.world) << group_name(kind);
    for (int r = 0; r < s.world; ++r) EXPECT_EQ(seen.count(r), 1u) << group_name(kind) << " rank " << r;
  }
  std::set<std::array<int, 4>> dense, expert;
  for (int r = 0; r < s.world; ++r) {
    const ProcessGrid g = ProcessGrid::make(gs, s.world, r);
    dense.insert({g.coord(GroupKind::TP), g.coord(GroupKind::CP), g.coord(GroupKind::DP), g.coord(GroupKind::PP)});
    expert.insert({g.coord(GroupKind::ETP), g.coord(GroupKind::EP), g.coord(GroupKind::EDP), g.coord(GroupKind::PP)});
  }
  EXPECT_EQ(int(dense.size()), s.world);
  EXPECT_EQ(int(expert.size()), s.world);
}

TEST(Grid, ShapesOn8And16Ranks) {
  const Shape6 shapes[] = {
      {8, 1, 1, 8, 1, 1, 1}, {8, 2, 1, 4, 1, 1, 1}, {8, 2, 1, 2, 2, 2, 1}, {8, 1, 1, 4, 2, 4, 1},
      {8, 2, 2, 2, 1, 4, 1}, {8, 2, 1, 4, 1, 2, 2}, {8, 1, 1, 8, 1, 8, 1}, {16, 2, 1, 4, 2, 4, 1},
      {16, 4, 1, 2, 2, 2, 2}, {16, 2, 2, 2, 2, 8, 1}, {16, 1, 1, 16, 1, 4, 1}, {16, 2, 1, 2, 4, 2, 1},
  };
  for (const auto& s : shapes) {
    SCOPED_TRACE("world " + std::to_string(s.world) + " tp" + std::to_string(s.tp) + " cp" + std::to_string(s.cp) +
                 " dp" + std::to_string(s.dp) + " pp" + std::to_string(s.pp) + " ep" + std::to_string(s.ep) + " etp" +
                 std::to_string(s.etp));
    check_grid(s);
  }
}

TEST(Grid, DefaultOrderPlacesThe8RankExampleAsDocumented) {
  // docs/parallel.md draws this layout: tp2 dp2 pp2 with ep2 folded over tp.
  GridSizes gs{2, 1, 0, 2, 2, 1, "tp-cp-dp-pp"};
  const ProcessGrid g = ProcessGrid::make(gs, 8, 5);
  EXPECT_EQ(g.sizes().dp, 2);
  EXPECT_EQ(g.group(GroupKind::TP).ranks, (std::vector<int>{4, 5}));
  EXPECT_EQ(g.group(GroupKind::DP).ranks, (std::vector<int>{5, 7}));
  EXPECT_EQ(g.group(GroupKind::PP).ranks, (std::vector<int>{1, 5}));
  EXPECT_EQ(g.group(GroupKind::EP).ranks, (std::vector<int>{4, 5}));
  EXPECT_EQ(g.group(GroupKind::EDP).ranks, (std::vector<int>{5, 7}));
}

TEST(Grid, OtherOrdersAreHonoured) {
  GridSizes gs{2, 1, 2, 2, 1, 1, "dp-tp-cp-pp"};
  const ProcessGrid g = ProcessGrid::make(gs, 8, 0);
  EXPECT_EQ(g.group(GroupKind::DP).ranks, (std::vector<int>{0, 1}));
  EXPECT_EQ(g.group(GroupKind::TP).ranks, (std::vector<int>{0, 2}));
}

TEST(Grid, BadLayoutsAreOneLineErrorsNamingTheKey) {
  auto msg = [](GridSizes gs, int world) {
    try {
      ProcessGrid::make(gs, world, 0);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg({2, 1, 0, 1, 1, 1, "tp-cp-dp-pp"}, 3).find("not divisible by tp*cp*pp"), std::string::npos);
  EXPECT_NE(msg({1, 1, 3, 1, 1, 1, "tp-cp-dp-pp"}, 4).find("does not match the world size"), std::string::npos);
  EXPECT_NE(msg({1, 1, 0, 1, 3, 1, "tp-cp-dp-pp"}, 4).find("parallel.etp*ep=3"), std::string::npos);
  EXPECT_NE(msg({1, 1, 0, 1, 1, 1, "tp-dp-pp"}, 4).find("parallel.order"), std::string::npos);
  EXPECT_NE(msg({0, 1, 0, 1, 1, 1, "tp-cp-dp-pp"}, 4).find("parallel.tp=0"), std::string::npos);
}

}  // namespace
}  // namespace sy
