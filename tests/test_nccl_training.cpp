// parallel.comm = nccl: the trainer's buffers (gradient buckets, token rows, tensor-parallel
// activations) move over the NCCL communicator (parallel/nccl/), host scalars over MPI. Here on
// engine.device = cuda-emu, where the emulated NCCL carries the data between the rank processes
// over MPI, so the streams, events and the ordering of the communicator run as on a GPU. Held to:
//  * the MPI communicator's run of the same layout, to the bit: the same buckets are reduced by
//    the same operations (the emulated NCCL's reductions are MPI's) and every transfer moves
//    bits; at dp 2 x ep 2 (token exchange, expert and dense buckets) and at tp 2 with sequence
//    parallelism (TP activations; the norms' partial gradients summed over TP before their DP
//    bucket), in float32 and in bfloat16 (TP reductions widened to float32 on the device);
//  * one rank with the same global batch (expect_same_run, 1e-5): AdamW on cuda-emu, plain SGD
//    on the CPU backend;
//  * overlapped gradient reduction (parallel.overlap_grad_reduce): every bucket started inside
//    the backward, and the run the same to the bit as with the reduction after the backward, on
//    NCCL and on the CPU backend over MPI, at zero 0 and 1 with gradient accumulation (a bucket
//    started in an earlier micro-batch's backward would reduce a partial sum and change the bits);
//  * a layout NCCL cannot carry: a one-line error naming the key and the fix.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "emu_run_sets.h"
#include "equivalence_check.h"
#include "run_harness.h"

namespace sy {
namespace {

using testing::kEmu;
using testing::kTiny;
const char* kShort = testing::kTinyShort;
const char* kNccl = " --set parallel.comm=nccl";
const char* kMpi = " --set parallel.comm=mpi";

// [a, b] of every record's grad_buckets field: the buckets the backward started, of all.
void expect_every_bucket_started_in_backward(const testing::RunDir& d, const std::string& run, size_t steps) {
  const auto f = d.field(run, "grad_buckets");
  ASSERT_EQ(f.size(), steps) << d.file(run + ".log");
  for (const std::string& s : f) {
    long a = -1, b = -1;
    ASSERT_EQ(std::sscanf(s.c_str(), "[%ld,%ld]", &a, &b), 2) << s;
    EXPECT_GT(b, 1) << run << ": more than one bucket, or the test shows no ordering";
    EXPECT_EQ(a, b) << run << ": buckets left for after the backward";
  }
}

TEST(NcclTraining, Dp2Ep2EqualsTheMpiRunToTheBitAndOneEmuRank) {
  testing::RunDir d("nccl_dp2ep2");
  // The reference is cuda-emu's own 1-rank run: AdamW against the CPU backend is the GEMMs'
  // summation order, magnified (tests/test_cuda_emu_training.cpp, check_emu_dp2_ep2).
  const std::string sets = std::string(kShort) + " --set train.steps=3 --set parallel.bucket_mb=0.5";
  auto r = d.train("ref", 0, sets + " --set train.grad_accum=4" + kEmu, "", kTiny);
  ASSERT_EQ(r.code, 0) << r.output;
  r = d.train("nccl", 4, sets + " --set parallel.ep=2" + kEmu + kNccl, "", kTiny);
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_NE(r.output.find("| cuda-emu float32 | 4 rank(s), dp=4 ep=2 tp=1 zero=0 comm=nccl overlap |"), std::string::npos)
      << r.output;
  r = d.train("mpi", 4, sets + " --set parallel.ep=2" + kEmu + kMpi + " --set parallel.overlap_grad_reduce=false", "", kTiny);
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_NE(r.output.find("zero=0 comm=mpi |"), std::string::npos) << r.output;
  testing::expect_bit_identical(d, "mpi", "nccl", 3);
  testing::expect_same_run(d, "ref", "nccl", 3);
  expect_every_bucket_started_in_backward(d, "nccl", 3);
  // The rows went over NCCL and the counts over MPI: the step's token bytes are both's.
  EXPECT_EQ(d.field("nccl", "a2a_bytes"), d.field("mpi", "a2a_bytes"));
  EXPECT_EQ(d.field("nccl", "a2a_bytes"), d.field("nccl", "a2a_bytes_routing"));
  EXPECT_EQ(d.field("nccl", "expert_tokens"), d.field("ref", "expert_tokens"));
}

TEST(NcclTraining, SgdDp2Ep2MatchesOneCpuRank) {
  testing::RunDir d("nccl_sgd");
  const std::string sets = std::string(kShort) + testing::kPlainSgd + " --set optim.weight_decay=0 --set train.steps=3";
  auto r = d.train("ref", 0, sets + " --set train.grad_accum=4", "", kTiny);
  ASSERT_EQ(r.code, 0) << r.output;
  r = d.train("nccl", 4, sets + " --set parallel.ep=2" + kEmu + kNccl, "", kTiny);
  ASSERT_EQ(r.code, 0) << r.output;
  testing::expect_same_run(d, "ref", "nccl", 3);
}

// tp 2 with sequence parallelism x dp 2, ZeRO-1, two micro-batches a step: float32 and bfloat16.
void check_tp2_sp(const std::string& dtype, const std::string& tag) {
  testing::RunDir d(tag);
  const std::string sets = std::string(kShort) + kEmu + " --set train.steps=2 --set train.grad_accum=2" +
                           " --set parallel.tp=2 --set parallel.sp=true --set parallel.zero=1" +
                           " --set parallel.bucket_mb=0.5 --set train.dtype=" + dtype;
  auto r = d.train("nccl", 4, sets + kNccl, "", kTiny);
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_NE(r.output.find("dp=2 ep=1 tp=2 sp zero=1 comm=nccl overlap |"), std::string::npos) << r.output;
  r = d.train("mpi", 4, sets + kMpi + " --set parallel.overlap_grad_reduce=false", "", kTiny);
  ASSERT_EQ(r.code, 0) << r.output;
  testing::expect_bit_identical(d, "mpi", "nccl", 2);
  expect_every_bucket_started_in_backward(d, "nccl", 2);
  EXPECT_EQ(d.field("nccl", "tp_bytes"), d.field("mpi", "tp_bytes"));
}

TEST(NcclTraining, Tp2SpFloat32EqualsTheMpiRunToTheBit) { check_tp2_sp("float32", "nccl_tp2"); }
TEST(NcclTraining, Tp2SpBfloat16EqualsTheMpiRunToTheBit) { check_tp2_sp("bfloat16", "nccl_tp2_bf16"); }

// The CPU backend over MPI: overlap on and off to the bit, with the layouts whose buckets differ
// most (TP blocks, partial norms, experts over EDP), at zero 0 and 1, two micro-batches a step,
// AdamW and SGD; small buckets, so that the backward starts many of them in turn.
void check_overlap_on_cpu(const std::string& layout, const std::string& optim, const std::string& tag) {
  testing::RunDir d(tag);
  const std::string sets = std::string(testing::kDenseAndSharedExpertModel) + optim +
                           " --set train.steps=3 --set train.grad_accum=2 --set train.log_every=1 --set parallel.bucket_mb=0.01" +
                           layout;
  auto r = d.train("on", 4, sets);
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_NE(r.output.find("comm=mpi overlap |"), std::string::npos) << r.output;
  r = d.train("off", 4, sets + " --set parallel.overlap_grad_reduce=false");
  ASSERT_EQ(r.code, 0) << r.output;
  testing::expect_bit_identical(d, "off", "on", 3);
  expect_every_bucket_started_in_backward(d, "on", 3);
  EXPECT_TRUE(d.field("off", "grad_buckets").empty());
}

TEST(NcclTraining, OverlapOnCpuTp2SpEp2Zero1IsBitIdentical) {
  check_overlap_on_cpu(" --set parallel.tp=2 --set parallel.sp=true --set parallel.ep=2 --set parallel.zero=1", "", "ovl_tp");
}
TEST(NcclTraining, OverlapOnCpuDp4Ep2Zero0SgdIsBitIdentical) {
  check_overlap_on_cpu(" --set parallel.ep=2", testing::kPlainSgd, "ovl_dp");
}

TEST(NcclTraining, LayoutsNcclCannotCarryAreOneLineErrors) {
  testing::RunDir d("nccl_errors");
  auto r = d.train("cpu", 0, std::string(" --set train.steps=1") + kNccl);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("switchyard: error: parallel.comm=\"nccl\" moves device buffers, which engine.device=\"cpu\" does "
                          "not have; set engine.device=\"cuda\" (or \"cuda-emu\"), or parallel.comm=\"mpi\""),
            std::string::npos)
      << r.output;
  r = d.train("pp", 2, std::string(" --set train.steps=1 --set parallel.pp=2") + kEmu + kNccl);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("error: parallel.comm=\"nccl\" with parallel.pp=2 is not built"), std::string::npos)
      << r.output;
  r = d.train("bad", 0, " --set train.steps=1 --set parallel.comm=gloo");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("parallel.comm"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("gloo"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace sy
