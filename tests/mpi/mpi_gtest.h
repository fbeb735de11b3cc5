// What every MPI test driver shares: ranks other than 0 print only their failures, prefixed
// with the rank, so the output of N ranks stays readable; run_tests_on_ranks installs that and
// runs the suite.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>

#include "parallel/comm.h"

namespace sy {

class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::printf("[rank %d] %s:%d: %s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
  }

 private:
  int rank_;
};

inline int run_tests_on_ranks(const Communicator& world) {
  if (world.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(world.rank()));
  }
  return RUN_ALL_TESTS();
}

}  // namespace sy
