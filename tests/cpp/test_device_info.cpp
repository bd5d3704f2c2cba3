// device_info and device_count: sane values on a GPU, clean errors without one.
#include <gtest/gtest.h>

#include <string>

#include "common/launch.h"
#include "flashkernel/device_info.h"
#include "flashkernel/status.h"
#include "test_utils.h"

namespace flashkernel {
namespace {

TEST(DeviceInfo, CountNeverThrows) { EXPECT_GE(device_count(), 0); }

TEST(DeviceInfo, BadIndexNamesTheArgument) {
  try {
    device_info(device_count() + 3);
    FAIL() << "expected ArgumentError";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.argument(), "device");
  }
}

TEST(DeviceInfo, ReportsTheCurrentGpu) {
  FK_SKIP_WITHOUT_GPU();
  DeviceInfo info = device_info();
  EXPECT_FALSE(info.name.empty());
  EXPECT_GE(info.compute_major, 7);
  EXPECT_GT(info.sm_count, 0);
  EXPECT_GT(info.total_memory_bytes, std::size_t(1) << 30);
  EXPECT_GT(info.l2_cache_bytes, 0u);
  EXPECT_GT(info.peak_sm_clock_khz, 0);
  EXPECT_GT(info.peak_memory_bandwidth_gbps(), 100.0);
}

// What a T4 (7.5) user reads when an op needs sm_80: the op, the capability needed and found, and
// what does run there.
TEST(ComputeCapability, MessageNamesTheOpTheNeedAndWhatRuns) {
  const std::string m = detail::compute_capability_message("flash_attention", 8, 7, 5);
  EXPECT_EQ(m.rfind("flash_attention: needs a GPU of compute capability 8.0 or newer", 0), 0u) << m;
  EXPECT_NE(m.find("this GPU is 7.5"), std::string::npos) << m;
  EXPECT_NE(m.find("paged decode attention"), std::string::npos) << m;
}

TEST(ComputeCapability, RequirePassesOnThisGpuAndRefusesAFutureOne) {
  FK_SKIP_WITHOUT_GPU();
  EXPECT_NO_THROW(detail::require_compute_capability("gelu_linear", device_info().compute_major));
  try {
    detail::require_compute_capability("gelu_linear", 99);
    FAIL() << "no error for compute capability 99";
  } catch (const ArgumentError&) {
    FAIL() << "not an argument error: the device is the problem";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("gelu_linear: needs a GPU of compute capability 99.0", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace flashkernel
