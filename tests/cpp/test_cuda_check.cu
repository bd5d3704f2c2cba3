// The error-check macros and DeviceAllocation (src/common): a CUDA error is reported once, where it
// happened, and then cleared, so it cannot make a later, unrelated check throw; a failed growth
// leaves the buffer empty. These run with or without a GPU. Without one, every CUDA call fails,
// which exercises the reporting paths; but that failure (no usable driver) is returned by every
// later call too and cannot be cleared, so "cleared" is checked only where a GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstddef>

#include "common/cuda_check.h"
#include "common/device_allocation.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

// More than any GPU has: cudaMalloc fails (out of memory, or no device), a non-sticky error.
constexpr std::size_t kImpossibleBytes = std::size_t(1) << 60;

__global__ void empty_kernel() {}

// The thread's last error is clear again (see the file comment for why only on a GPU).
void expect_error_consumed() {
  if (testing::has_gpu()) EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "a reported error must not linger";
}

TEST(CudaCheck, FailedCallIsReportedAndCleared) {
  (void)cudaGetLastError();
  void* p = nullptr;
  EXPECT_THROW(FK_CUDA_CHECK(cudaMalloc(&p, kImpossibleBytes)), CudaError);
  expect_error_consumed();
}

TEST(CudaCheck, LaunchErrorIsReportedOnce) {
  (void)cudaGetLastError();
  // 4096 threads per block is above every GPU's limit: the launch is rejected (or, without a
  // device, fails for that reason).
  empty_kernel<<<1, 4096>>>();
  EXPECT_THROW(FK_CHECK_LAUNCH(), CudaError);
  if (testing::has_gpu()) {
    // The next checks, with no launch or a good one in between, must not throw it again.
    EXPECT_NO_THROW(FK_CHECK_LAUNCH());
    empty_kernel<<<1, 32>>>();
    EXPECT_NO_THROW(FK_CHECK_LAUNCH());
    EXPECT_NO_THROW(FK_CUDA_CHECK(cudaDeviceSynchronize()));
  }
}

TEST(CudaCheck, DiscardedErrorIsCleared) {
  void* p = nullptr;
  detail::discard_cuda_error(cudaMalloc(&p, kImpossibleBytes));
  expect_error_consumed();
}

TEST(DeviceAllocation, FailedGrowthLeavesItEmptyAndNamesTheBuffer) {
  (void)cudaGetLastError();
  detail::DeviceAllocation a;
  if (testing::has_gpu()) {
    EXPECT_TRUE(a.grow(1024, "test buffer"));
    EXPECT_NE(a.get(), nullptr);
    EXPECT_EQ(a.bytes(), 1024u);
    EXPECT_FALSE(a.grow(512, "test buffer"));  // already large enough: unchanged
    EXPECT_EQ(a.bytes(), 1024u);
  }
  try {
    a.grow(kImpossibleBytes, "test buffer");
    FAIL() << "expected CudaError";
  } catch (const CudaError& e) {
    EXPECT_NE(std::string(e.what()).find("test buffer"), std::string::npos) << e.what();
  }
  // Empty, not a size that still claims the freed block.
  EXPECT_EQ(a.get(), nullptr);
  EXPECT_EQ(a.bytes(), 0u);
  expect_error_consumed();
  if (testing::has_gpu()) {
    EXPECT_TRUE(a.grow(2048, "test buffer"));  // usable again
    EXPECT_EQ(a.bytes(), 2048u);
  }
  detail::DeviceAllocation moved = std::move(a);
  EXPECT_EQ(a.get(), nullptr);
  EXPECT_EQ(a.bytes(), 0u);
}

}  // namespace
}  // namespace flashkernel
