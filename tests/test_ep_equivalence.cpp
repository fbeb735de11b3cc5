// Expert parallelism proven by equivalence: with ep ranks (times dp) each training its own
// micro-batch, experts split over the EP group and tokens exchanged by all-to-all, every step's
// loss and every final parameter must equal the 1-rank run with grad_accum = world size (the same
// micro-batches; capacity and the aux loss are per micro-batch), within 1e-5 relative in float32.
// SGD at lr 0.1 without clipping exposes any wrong expert-gradient scaling (see
// test_dp_equivalence.cpp for why not lr 1.0).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "equivalence_check.h"
#include "run_harness.h"

namespace sy {
namespace {

const char* kSgd = testing::kPlainSgd;
const char* kCapacity = " --set model.capacity_factor=1.0";
const char* kShared = " --set model.n_shared_experts=1";
const char* kBias = " --set model.router_bias_update_rate=0.01";

// ranks = dp * ep; the reference runs every rank's micro-batch on one rank.
void check_ep(int ranks, int ep, const std::string& sets, const std::string& tag) {
  testing::RunDir d(tag);
  auto r = d.train("ref", 0, sets + " --set train.grad_accum=" + std::to_string(ranks));
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string name = "ep" + std::to_string(ep) + "_of" + std::to_string(ranks);
  r = d.train(name, ranks, sets + " --set parallel.ep=" + std::to_string(ep));
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_NE(r.output.find("dp=" + std::to_string(ranks) + " ep=" + std::to_string(ep) + " "), std::string::npos) << r.output;
  testing::expect_same_run(d, "ref", name);
  // Routing is decided on each rank's own micro-batch, so the per-expert token counts of every
  // layer and the dropped share, summed over ranks, equal the 1-rank run's exactly.
  const auto tokens_ref = d.field("ref", "expert_tokens"), tokens = d.field(name, "expert_tokens");
  ASSERT_EQ(tokens_ref.size(), 10u);
  EXPECT_EQ(tokens, tokens_ref);
  EXPECT_EQ(d.field(name, "dropped_share"), d.field("ref", "dropped_share"));
  // A capacity run must actually drop tokens, or the checks of the dropped set prove nothing.
  if (sets.find("capacity_factor=1.0") != std::string::npos) {
    double most = 0;
    for (const auto& s : d.field(name, "dropped_share")) most = std::max(most, std::stod(s));
    EXPECT_GT(most, 0.0) << "capacity 1.0 dropped nothing in 10 steps";
  }
  // Not only as many: the same tokens, micro-batch by micro-batch and layer by layer.
  const auto digest_ref = d.field("ref", "dropped_digest");
  ASSERT_EQ(digest_ref.size(), 10u);
  EXPECT_EQ(d.field(name, "dropped_digest"), digest_ref);
  // Communication volume: the all-to-all bytes the communicator counted each step equal the
  // count implied by the routing (rows sent off-rank x d_model x 4 bytes, dispatch and combine,
  // forward and backward, plus the per-layer count exchange), and are not zero.
  const auto measured = d.field(name, "a2a_bytes"), routing = d.field(name, "a2a_bytes_routing");
  ASSERT_EQ(measured.size(), 10u);
  EXPECT_EQ(measured, routing);
  for (const auto& m : measured) EXPECT_GT(std::stoll(m), 0);
  // And per rank: what each rank's communicator counted equals 2 (S_r + R_r) d_model 4 bytes plus
  // its count exchange, from its own routing; nothing else went over the EP communicator.
  const auto by_rank = d.field(name, "a2a_bytes_by_rank"), by_routing = d.field(name, "a2a_routing_by_rank");
  ASSERT_EQ(by_rank.size(), 10u);
  EXPECT_EQ(by_rank, by_routing);
  const std::string zeros = "[" + [&] {
    std::string z;
    for (int q = 0; q < ranks; ++q) z += q ? ",0" : "0";
    return z;
  }() + "]";
  for (const auto& other : d.field(name, "ep_other_bytes_by_rank")) EXPECT_EQ(other, zeros);
}

TEST(EpEquivalence, AdamWEp2Dropless) { check_ep(2, 2, "", "ep_a2"); }
TEST(EpEquivalence, AdamWEp2CapacitySharedBias) { check_ep(2, 2, std::string(kCapacity) + kShared + kBias, "ep_a2c"); }
TEST(EpEquivalence, SgdEp2Capacity) { check_ep(2, 2, std::string(kSgd) + kCapacity, "ep_s2c"); }
TEST(EpEquivalence, AdamWEp4Capacity) { check_ep(4, 4, kCapacity, "ep_a4c"); }
TEST(EpEquivalence, SgdEp4DroplessSharedBias) { check_ep(4, 4, std::string(kSgd) + kShared + kBias, "ep_s4"); }
TEST(EpEquivalence, AdamWDp2Ep2CapacityBias) { check_ep(4, 2, std::string(kCapacity) + kBias, "ep_a22"); }
TEST(EpEquivalence, SgdDp2Ep2DroplessShared) { check_ep(4, 2, std::string(kSgd) + kShared, "ep_s22"); }
TEST(EpEquivalence, SgdDp2Ep4Capacity) { check_ep(8, 4, std::string(kSgd) + kCapacity, "ep_s24"); }
TEST(EpEquivalence, AdamWDp2Ep4Dropless) { check_ep(8, 4, "", "ep_a24"); }
// DeepSeek-V3's routing over EP ranks: sigmoid scores, 2 groups of 2 experts (the best one per
// token), the aux-free bias and a routed scaling factor of 2.5.
TEST(EpEquivalence, SgdEp2GroupLimitedScaledRouting) {
  check_ep(2, 2,
           std::string(kSgd) + kBias +
               " --set model.score_fn=sigmoid --set model.n_expert_groups=2 --set model.topk_groups=1"
               " --set model.routed_scaling_factor=2.5",
           "ep_s2grp");
}

TEST(EpEquivalence, SgdEp8EightExpertsDroplessShared) {
  check_ep(8, 8, std::string(" --set model.n_experts=8") + kSgd + kShared, "ep_s8");
}
TEST(EpEquivalence, AdamWEp8EightExpertsCapacityShared) {
  check_ep(8, 8, std::string(" --set model.n_experts=8") + kCapacity + kShared + kBias, "ep_a8");
}

TEST(EpEquivalence, FineGrainedRecipeAtEp8) {
  // recipes/fine-grained-moe.toml (64 experts top-6, 2 shared, first layer dense) shrunk in
  // length and width only, at ep = 8 against one rank, 10 steps.
  testing::RunDir d("ep_fine");
  const std::string sets =
      " --set model.seq_len=32 --set model.d_model=64 --set model.n_heads=4 --set model.n_kv_heads=2"
      " --set model.expert_ffn_dim=16 --set model.d_ff=64 --set train.steps=10 --set train.micro_batch=1"
      " --set train.log_every=1 --set train.eval_every=0 --set train.eval_batches=2 --set train.max_minutes=0";
  const std::string recipe = "recipes/fine-grained-moe.toml";
  auto r = d.train("ref", 0, sets + " --set train.grad_accum=8", "", recipe);
  ASSERT_EQ(r.code, 0) << r.output;
  r = d.train("ep8", 8, sets + " --set parallel.ep=8", "", recipe);
  ASSERT_EQ(r.code, 0) << r.output;
  testing::expect_same_run(d, "ref", "ep8", 10);
  EXPECT_EQ(d.field("ep8", "expert_tokens"), d.field("ref", "expert_tokens"));
}

TEST(EpConfig, EpMustDivideTheExperts) {
  testing::RunDir d("ep_bad");
  const auto r = d.train("bad", 3, " --set parallel.ep=3 --set model.n_experts=8");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("parallel.ep=3 does not divide model.n_experts=8"), std::string::npos) << r.output;
}

int64_t memory_field(const testing::RunDir& d, const std::string& run, int rank, const std::string& key) {
  const std::string text = d.file(run + "/memory.rank" + std::to_string(rank) + ".json");
  const size_t at = text.find("\"" + key + "\":");
  return at == std::string::npos ? -1 : std::stoll(text.substr(at + key.size() + 3));
}

// The memory tests' runs: the 1-rank reference with `ranks` micro-batches per step and the
// layout's run (shared experts on), proven equal before their memory reports are read.
void train_ref_and_layout(const testing::RunDir& d, const std::string& name, int ranks, const std::string& layout) {
  auto r = d.train("ref", 0, std::string(kShared) + " --set train.grad_accum=" + std::to_string(ranks));
  ASSERT_EQ(r.code, 0) << r.output;
  r = d.train(name, ranks, std::string(kShared) + layout);
  ASSERT_EQ(r.code, 0) << r.output;
  testing::expect_same_run(d, "ref", name);
}

// Storage follows ownership: at dp2 x ep2 each rank holds the dense parameters and half the
// experts (not all of them), and ZeRO-1 shards the dense moments over the 4 DP ranks and each
// expert half over its 2 EDP ranks, so every rank keeps a quarter of the 1-rank optimizer state.
TEST(EpEquivalence, AdamWDp2Ep2Zero1ShardsExpertStorageAndStateByOwner) {
  testing::RunDir d("ep_z1_mem");
  ASSERT_NO_FATAL_FAILURE(train_ref_and_layout(d, "dp2ep2z1", 4, " --set parallel.ep=2 --set parallel.zero=1"));
  const int64_t dense = memory_field(d, "ref", 0, "dense_params"), experts = memory_field(d, "ref", 0, "expert_params");
  const int64_t state = memory_field(d, "ref", 0, "optimizer_state_bytes");
  ASSERT_GT(experts, 0);
  ASSERT_EQ(state, 8 * (dense + experts));  // two float32 moments per parameter
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(memory_field(d, "dp2ep2z1", rank, "dense_params"), dense);
    EXPECT_EQ(memory_field(d, "dp2ep2z1", rank, "expert_params"), experts / 2);
    // Each segment padded to its group's size: at most 3 dense and 1 expert padding elements.
    const int64_t bytes = memory_field(d, "dp2ep2z1", rank, "parameter_bytes");
    EXPECT_GE(bytes, 4 * (dense + experts / 2));
    EXPECT_LE(bytes, 4 * (dense + experts / 2 + 4));
    const int64_t opt = memory_field(d, "dp2ep2z1", rank, "optimizer_state_bytes");
    EXPECT_NEAR(double(opt), double(state) / 4, 8.0 * 4) << "rank " << rank;
  }
}

TEST(EpEquivalence, SgdEp2Zero1Dropless) { check_ep(2, 2, std::string(kSgd) + " --set parallel.zero=1", "ep_sz1"); }
// Without ZeRO, ep4: each rank holds the dense parameters and a quarter of the experts, and so
// a quarter of the experts' gradients and AdamW moments.
TEST(EpEquivalence, AdamWEp4StoresAQuarterOfTheExperts) {
  testing::RunDir d("ep4_mem");
  ASSERT_NO_FATAL_FAILURE(train_ref_and_layout(d, "ep4", 4, " --set parallel.ep=4"));
  const int64_t dense = memory_field(d, "ref", 0, "dense_params"), experts = memory_field(d, "ref", 0, "expert_params");
  ASSERT_GT(experts, 0);
  ASSERT_EQ(experts % 4, 0);
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_EQ(memory_field(d, "ep4", rank, "dense_params"), dense);
    EXPECT_EQ(memory_field(d, "ep4", rank, "expert_params"), experts / 4);
    EXPECT_EQ(memory_field(d, "ep4", rank, "parameter_bytes"), 4 * (dense + experts / 4));
    EXPECT_EQ(memory_field(d, "ep4", rank, "optimizer_state_bytes"), 8 * (dense + experts / 4));
    EXPECT_EQ(memory_field(d, "ep4", rank, "gradient_buffer_bytes"), 4 * (dense + experts / 4));
  }
}

TEST(EpEquivalence, AdamWEp2Zero1Capacity) { check_ep(2, 2, std::string(kCapacity) + " --set parallel.zero=1", "ep_z1"); }
TEST(EpEquivalence, SgdDp2Ep2Zero2Shared) {
  check_ep(4, 2, std::string(kSgd) + kShared + " --set parallel.zero=2", "ep_z2");
}

}  // namespace
}  // namespace sy
