#include <gtest/gtest.h>

#include "engine/backend.h"

TEST(Tensor, ViewsShareStorageAndCheckBounds) {
  auto storage = std::make_shared<sy::Storage>();
  storage->bytes = std::shared_ptr<std::byte>(new std::byte[64], std::default_delete<std::byte[]>());
  storage->size = 64;
  sy::Tensor t(storage, 0, {4, 4}, sy::DType::F32);
  auto r = t.rows(1, 3);
  EXPECT_EQ(r.numel(), 8);
  EXPECT_EQ(r.data<float>(), t.data<float>() + 4);
  EXPECT_THROW(t.rows(2, 5), std::out_of_range);
  EXPECT_THROW(t.data<double>(), std::logic_error);
}
