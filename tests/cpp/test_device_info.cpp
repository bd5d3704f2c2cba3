// device_info and device_count: sane values on a GPU, clean errors without one.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace flashkernel
