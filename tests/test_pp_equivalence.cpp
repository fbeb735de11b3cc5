// Pipeline parallelism proven by equivalence: the model's layers cut into pp stages (pp * vpp
// chunks under interleaving), micro-batches through the 1F1B or interleaved 1F1B schedule, and
// every step's loss and every final parameter equal to the 1-rank run with the same micro-batches
// (grad_accum = micro-batches per pipeline x dp), within 1e-5 relative in float32, with AdamW and
// plain SGD (lr 0.1, no clipping). The model has 8 layers (layer 0 dense, the rest MoE with a
// shared expert), so that pp 4 x vpp 2 gives every chunk a layer, and stages hold dense and MoE
// layers, the embedding (first stage) and the head and loss (last).
//
// Also checked from metrics.jsonl, per stage: under 1F1B stage r never has more than pp - r
// micro-batches forwarded and not yet backwarded (pp on the first stage: the schedule's memory
// promise), keeps at most pp - r chunk inputs for recomputation (none on the first stage, which
// recomputes from the token ids), and the last stage, which runs each backward right after its
// forward, never recomputes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "equivalence_check.h"
#include "run_harness.h"

namespace sy {
namespace {

const char* kSgd = testing::kPlainSgd;
const std::string kModel = std::string(testing::kDenseAndSharedExpertModel) + " --set model.n_layers=8";

std::vector<int64_t> ints(const std::string& json_array) {
  std::vector<int64_t> v;
  std::string cur;
  for (char ch : json_array) {
    if ((ch >= '0' && ch <= '9') || ch == '-') cur += ch;
    else if (!cur.empty()) v.push_back(std::stoll(cur)), cur.clear();
  }
  if (!cur.empty()) v.push_back(std::stoll(cur));
  return v;
}

struct PpLayout {
  int pp = 2, vpp = 1, tp = 1, dp = 1, ep = 1;
  bool sp = false;
  int micro = 4;  // micro-batches per pipeline per step
};

// `pp_only`: settings of the pipeline run alone (the reference has no stages).
// `layers`: the split the banner must show ("3/5").
void check_pp(const PpLayout& l, const std::string& sets, const std::string& tag, const std::string& pp_only = "",
              const std::string& layers = "") {
  testing::RunDir d(tag);
  const bool sgd = sets.find("optim.name=sgd") != std::string::npos;
  // eps 1e-5 as in the TP tests (test_tp_equivalence.cpp): TP reorders float32 sums.
  const std::string all = std::string(kModel) + (sgd || l.tp == 1 ? "" : " --set optim.eps=1e-5") + sets;
  auto r = d.train("ref", 0, all + " --set train.grad_accum=" + std::to_string(l.micro * l.dp));
  ASSERT_EQ(r.code, 0) << r.output;
  const int ranks = l.pp * l.tp * l.dp;
  r = d.train("pp", ranks,
              all + " --set train.grad_accum=" + std::to_string(l.micro) + " --set parallel.pp=" + std::to_string(l.pp) +
                  " --set parallel.vpp=" + std::to_string(l.vpp) + " --set parallel.tp=" + std::to_string(l.tp) +
                  " --set parallel.ep=" + std::to_string(l.ep) + " --set parallel.sp=" + (l.sp ? "true" : "false") +
                  pp_only);
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_NE(r.output.find(" pp=" + std::to_string(l.pp)), std::string::npos) << r.output;
  if (!layers.empty()) {
    EXPECT_NE(r.output.find("(layers " + layers + ")"), std::string::npos) << r.output;
  }
  testing::expect_same_run(d, "ref", "pp");
  EXPECT_EQ(d.field("pp", "expert_tokens"), d.field("ref", "expert_tokens"));
  EXPECT_EQ(d.field("pp", "dropped_digest"), d.field("ref", "dropped_digest"));
  if (sets.find("capacity_factor") != std::string::npos) {  // the drops compared must exist
    bool dropped = false;
    for (const std::string& v : d.field("pp", "dropped_share")) dropped = dropped || std::stod(v) > 0;
    EXPECT_TRUE(dropped) << "no token was dropped: the capacity check is vacuous";
  }

  const auto in_flight = d.field("pp", "pp_in_flight_by_stage"), kept = d.field("pp", "pp_kept_inputs_by_stage"),
             recomputes = d.field("pp", "pp_recomputes_by_stage");
  ASSERT_EQ(in_flight.size(), 10u);
  for (size_t s = 0; s < in_flight.size(); ++s) {
    const auto f = ints(in_flight[s]), k = ints(kept[s]), rc = ints(recomputes[s]);
    ASSERT_EQ(f.size(), size_t(l.pp)) << in_flight[s];
    if (l.vpp > 1) continue;
    for (int st = 0; st < l.pp; ++st) {
      EXPECT_EQ(f[st], std::min(l.pp - st, l.micro)) << "stage " << st << " step " << s + 1;
      EXPECT_EQ(k[st], st == 0 ? 0 : std::min(l.pp - st, l.micro)) << "stage " << st;
    }
    EXPECT_EQ(rc[l.pp - 1], 0) << "the last stage recomputed";
  }
}

TEST(PpEquivalence, AdamWPp2) { check_pp({2, 1}, "", "pp_a2"); }
TEST(PpEquivalence, SgdPp2) { check_pp({2, 1}, kSgd, "pp_s2"); }
TEST(PpEquivalence, AdamWPp4) { check_pp({4, 1, 1, 1, 1, false, 8}, "", "pp_a4"); }
TEST(PpEquivalence, SgdPp4) { check_pp({4, 1, 1, 1, 1, false, 8}, kSgd, "pp_s4"); }
TEST(PpEquivalence, AdamWPp2Vpp2) { check_pp({2, 2}, "", "pp_a2v2"); }
TEST(PpEquivalence, SgdPp2Vpp2) { check_pp({2, 2}, kSgd, "pp_s2v2"); }
TEST(PpEquivalence, AdamWPp4Vpp2) { check_pp({4, 2, 1, 1, 1, false, 8}, "", "pp_a4v2"); }
TEST(PpEquivalence, SgdPp4Vpp2) { check_pp({4, 2, 1, 1, 1, false, 8}, kSgd, "pp_s4v2"); }

// An explicit, uneven split (parallel.pp_layers): the first stage 3 layers (embedding, the dense
// layer, two MoE), the last 5; interleaved 1 + 2 + 4 + 1.
TEST(PpEquivalence, SgdPp2ExplicitSplit) { check_pp({2, 1}, kSgd, "pp_s2split", " --set parallel.pp_layers=[3,5]", "3/5"); }
TEST(PpEquivalence, AdamWPp2Vpp2ExplicitSplit) {
  check_pp({2, 2}, "", "pp_a2v2split", " --set parallel.pp_layers=[1,2,4,1]", "1/2/4/1");
}
TEST(PpEquivalence, AdamWPp4BalancedSplitOfTenLayers) {  // 10 layers over 4 stages: 3/3/2/2
  check_pp({4, 1, 1, 1, 1, false, 8}, " --set model.n_layers=10", "pp_a4ten", "", "3/3/2/2");
}

// Tied embeddings: the first stage's lookup and the last stage's head each hold the table; their
// gradients are summed over the two stages, the norm counts the table once, and the checkpoint
// and weights file hold it once.
const char* kTied = " --set model.tie_embeddings=true";
TEST(PpEquivalence, AdamWPp2TiedEmbeddings) { check_pp({2, 1}, kTied, "pp_a2tie"); }
TEST(PpEquivalence, SgdPp4Vpp2TiedEmbeddings) { check_pp({4, 2, 1, 1, 1, false, 8}, std::string(kSgd) + kTied, "pp_s4v2tie"); }
TEST(PpEquivalence, AdamWPp2Tp2Dp2TiedEmbeddingsClipped) {
  check_pp({2, 1, 2, 2, 1, true, 4}, std::string(kTied) + " --set optim.grad_clip=0.05", "pp_a2t2d2tie");
}

// The 4-rank layouts: pp2 x tp2 with ep2 folded over the TP pair, and pp2 x dp2 x ep2
// with ZeRO 1.
TEST(PpEquivalence, AdamWPp2Tp2Ep2) { check_pp({2, 1, 2, 1, 2, false, 4}, "", "pp_a2t2e2"); }
TEST(PpEquivalence, SgdPp2Tp2Ep2) { check_pp({2, 1, 2, 1, 2, false, 4}, kSgd, "pp_s2t2e2"); }
TEST(PpEquivalence, AdamWPp2Dp2Ep2Zero1) { check_pp({2, 1, 1, 2, 2, false, 4}, " --set parallel.zero=1", "pp_a2d2e2z1"); }
TEST(PpEquivalence, SgdPp2Dp2Ep2Zero1) {
  check_pp({2, 1, 1, 2, 2, false, 4}, std::string(kSgd) + " --set parallel.zero=1", "pp_s2d2e2z1");
}

// Composed with the other dimensions (8 ranks each): every stage's TP, EP and DP groups inside
// the stage; ZeRO shards each stage's optimizer state over its own DP group.
TEST(PpEquivalence, AdamWPp2Tp2Dp2Ep2) { check_pp({2, 1, 2, 2, 2, false, 4}, "", "pp_a2t2d2e2"); }
TEST(PpEquivalence, SgdPp2Tp2Dp2Ep2) { check_pp({2, 1, 2, 2, 2, false, 4}, kSgd, "pp_s2t2d2e2"); }
TEST(PpEquivalence, SgdPp2Dp4Ep2Zero1) {
  check_pp({2, 1, 1, 4, 2, false, 4}, std::string(kSgd) + " --set parallel.zero=1", "pp_s2d4e2z1");
}
TEST(PpEquivalence, AdamWPp2Dp4Ep2Zero1) { check_pp({2, 1, 1, 4, 2, false, 4}, " --set parallel.zero=1", "pp_a2d4e2z1"); }
TEST(PpEquivalence, AdamWPp2Tp2Dp2Sp) { check_pp({2, 1, 2, 2, 1, true, 4}, "", "pp_a2t2d2sp"); }
TEST(PpEquivalence, SgdPp2Tp2Dp2Sp) { check_pp({2, 1, 2, 2, 1, true, 4}, kSgd, "pp_s2t2d2sp"); }
// Capacity drops and the aux-free bias across stages: each stage's layers drop and balance as the
// 1-rank run's do.
TEST(PpEquivalence, AdamWPp2Vpp2Dp2CapacityBias) {
  check_pp({2, 2, 1, 2, 2, false, 4}, " --set model.capacity_factor=1.0 --set model.router_bias_update_rate=0.01",
           "pp_a2v2d2cb");
}

// Each stage holds only its layers: the stages' parameter, gradient and AdamW-state bytes add up
// to the 1-rank run's exactly (no padding at dp 1). metrics.jsonl reports every rank's peak per
// category at each logged step; the categories fixed at start-up equal the exit report's.
TEST(PpMemory, StagesSplitTheStateAndEveryRankReportsItsPeaksPerCategory) {
  testing::RunDir d("pp_mem");
  const std::string base = std::string(kModel) + " --set train.steps=2 --set train.grad_accum=4";
  ASSERT_EQ(d.train("one", 0, base).code, 0);
  const auto r = d.train("pp4", 4, base + " --set parallel.pp=4");
  ASSERT_EQ(r.code, 0) << r.output;
  for (const std::string cat : {"parameters", "gradients", "optimizer_state"}) {
    const int64_t one = d.exit_peak_bytes("one", 0, cat);
    ASSERT_GT(one, 0) << cat;
    const auto logged = d.field("pp4", "mem_peak_bytes");
    ASSERT_EQ(logged.size(), 2u);
    int64_t sum = 0;
    for (int q = 0; q < 4; ++q) {
      const int64_t mine = d.exit_peak_bytes("pp4", q, cat);
      EXPECT_GT(mine, 0) << cat << " stage " << q;
      EXPECT_LT(mine, one) << cat << " stage " << q;
      sum += mine;
    }
    EXPECT_EQ(sum, one) << cat;
  }
  // The logged per-rank lists: 4 entries per category, the fixed ones equal to the exit report.
  const std::string text = d.file("pp4/metrics.jsonl");
  for (const std::string cat : {"parameters", "gradients", "optimizer_state"}) {
    const size_t at = text.find("\"" + cat + "\":[", text.find("\"mem_peak_bytes\":"));
    ASSERT_NE(at, std::string::npos) << cat;
    const auto v = ints(text.substr(at + cat.size() + 3, text.find(']', at) - at - cat.size() - 3));
    ASSERT_EQ(v.size(), 4u) << cat;
    for (int q = 0; q < 4; ++q) EXPECT_EQ(v[size_t(q)], d.exit_peak_bytes("pp4", q, cat)) << cat << " rank " << q;
  }
}

// Layouts the pipeline cannot run: one line each naming the keys and the fix, exit code 2.
TEST(PpErrors, OneLineEachNamingTheKeys) {
  testing::RunDir d("pp_errors");
  const std::pair<std::string, std::string> cases[] = {
      {" --set parallel.vpp=2", "switchyard: error: parallel.vpp=2 needs parallel.pp > 1; set parallel.vpp=1"},
      {" --set parallel.pp=4 --set parallel.vpp=2",
       "switchyard: error: model.n_layers=2 cannot fill parallel.pp * parallel.vpp = 8 pipeline chunks; lower pp or vpp"},
      {" --set model.n_layers=8 --set parallel.pp=2 --set parallel.vpp=2 --set train.grad_accum=3",
       "switchyard: error: interleaved 1F1B (parallel.vpp=2) needs train.grad_accum (3, the micro-batches per step) "
       "divisible by parallel.pp=2; change grad_accum or set vpp=1"},
      {" --set parallel.cp=2", "switchyard: error: parallel.cp=2 is not supported yet"},
      {" --set model.n_layers=8 --set parallel.pp=2 --set parallel.pp_layers=[3,4]",
       "switchyard: error: parallel.pp_layers=[3, 4] adds up to 7 layers, not model.n_layers=8; make the counts sum to it"},
      {" --set model.n_layers=8 --set parallel.pp=2 --set parallel.pp_layers=[8]",
       "switchyard: error: parallel.pp_layers=[8] has 1 entries for parallel.pp * parallel.vpp = 2 chunks; give one "
       "layer count per chunk"},
      {" --set model.n_layers=8 --set parallel.pp=2 --set parallel.pp_layers=[9,-1]",
       "switchyard: error: parallel.pp_layers=[9, -1] gives a chunk -1 layers; every chunk needs at least one"},
      {" --set parallel.pp_layers=[1,1]",
       "switchyard: error: parallel.pp_layers is set but parallel.pp=1; remove it or set parallel.pp"},
      {" --set parallel.pp_layers=3", "switchyard: error: parallel.pp_layers must be an array of integers, got"}};
  int i = 0;
  for (const auto& [sets, want] : cases) {
    const auto r = d.train("bad" + std::to_string(i++), 0, sets);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_EQ(r.output.rfind(want, 0), 0u) << r.output;
    EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << "more than one line: " << r.output;
  }
}

}  // namespace
}  // namespace sy
