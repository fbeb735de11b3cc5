// The flat parameter store: its two segments, and initialisation that depends on a parameter's
// name only, so that a rank holding some experts starts from the very values the 1-rank run has.
#include <gtest/gtest.h>

#include <map>
#include <stdexcept>

#include "engine/cpu/cpu_backend.h"
#include "engine/host_io.h"
#include "model_fixtures.h"

namespace sy {
namespace {

std::map<std::string, std::vector<double>> values_by_name(const ParamStore& ps, Backend& be) {
  std::map<std::string, std::vector<double>> out;
  for (size_t i = 0; i < ps.infos().size(); ++i) out[ps.infos()[i].name] = download_f64(be, ps.value(int(i)));
  return out;
}

TEST(ParamStore, DenseSegmentThenExpertSegmentEachPaddedToItsGroup) {
  auto be = make_cpu_backend();
  const ModelConfig c = testing::tiny_two_layer_config();
  Model m(c, *be, DType::F32, 5, ModelShard{{}, 3, 4, {}, {}});
  const ParamStore& ps = m.params();
  const ParamSegment rep = ps.segment(SegmentKind::Replicated), rows = ps.segment(SegmentKind::TpRows);
  const ParamSegment experts = ps.expert_segment();
  EXPECT_EQ(rows.begin, rep.padded);
  EXPECT_EQ(rep.padded % 3, 0);
  const ParamSegment dense{rep.begin, rep.numel + rows.numel, rep.padded + rows.padded};
  // 4 experts of 3 matrices of 8 x 16 in the one MoE layer.
  EXPECT_EQ(experts.numel, 4 * 3 * 8 * 16);
  EXPECT_EQ(dense.numel + experts.numel, ps.total_numel());
  EXPECT_EQ(rows.padded % 3, 0);
  EXPECT_LT(dense.padded - dense.numel, 6);
  EXPECT_EQ(experts.begin, dense.padded);
  EXPECT_EQ(experts.padded % 4, 0);
  EXPECT_EQ(ps.values().numel(), dense.padded + experts.padded);
  for (const ParamInfo& p : ps.infos()) {
    const ParamSegment& seg = ps.segment(p.segment());
    EXPECT_GE(p.offset, seg.begin) << p.name;
    EXPECT_LE(p.offset + p.numel, seg.begin + seg.numel) << p.name;
    EXPECT_EQ(p.is_expert(), p.name.find(".experts.") != std::string::npos) << p.name;
  }
  // An expert's w1 and w3 stay adjacent: the fused gate|up view needs them back to back.
  const int w1 = ps.find("layers.1.moe.experts.2.w1");
  ASSERT_GE(w1, 0);
  EXPECT_EQ(ps.fused_value(w1, 2).dim(0), 16);
}

TEST(ParamStore, HoldingSomeExpertsGivesTheSameValuesAsHoldingAll) {
  auto be = make_cpu_backend();
  const ModelConfig c = testing::tiny_two_layer_config();
  Model full(c, *be, DType::F32, 9), part(c, *be, DType::F32, 9, ModelShard{{2, 2}, 1, 1, {}, {}});
  const auto a = values_by_name(full.params(), *be), b = values_by_name(part.params(), *be);
  EXPECT_EQ(part.params().expert_segment().numel, full.params().expert_segment().numel / 2);
  EXPECT_EQ(part.total_params(), full.total_params());
  EXPECT_EQ(b.size(), a.size() - 2 * 3);  // experts 0 and 1 (3 matrices each) are not held
  EXPECT_FALSE(b.count("layers.1.moe.experts.0.w1"));
  EXPECT_TRUE(b.count("layers.1.moe.experts.3.w2"));
  for (const auto& [name, v] : b) EXPECT_EQ(v, a.at(name)) << name;
  // A different seed changes them: the equality above is not vacuous.
  Model other(c, *be, DType::F32, 10);
  EXPECT_NE(values_by_name(other.params(), *be).at("layers.1.moe.experts.3.w2"), b.at("layers.1.moe.experts.3.w2"));
}

TEST(ParamStore, ExpertParamNameRenamesOnlyTheExpertIndex) {
  ParamInfo p;
  p.name = "layers.11.moe.experts.1.w1";
  p.expert = 1;
  EXPECT_EQ(expert_param_name(p, 13), "layers.11.moe.experts.13.w1");
  ParamStore ps;
  EXPECT_THROW(ps.add("layers.0.moe.experts.2.w1", {2, 2}, ParamKind::Matrix, 0.1, 3), std::logic_error);
}

TEST(ParamStore, ALayerHoldingSomeExpertsRefusesToRunWithoutAnExchange) {
  auto be = make_cpu_backend();
  const ModelConfig c = testing::tiny_two_layer_config();
  Model part(c, *be, DType::F32, 9, ModelShard{{0, 2}, 1, 1, {}, {}});
  EXPECT_THROW(part.forward(testing::random_batch(1, c.seq_len, c.vocab_size, 3)), std::logic_error);
}

}  // namespace
}  // namespace sy
