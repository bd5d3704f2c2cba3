// device_info: what the library needs to know about a GPU (and what benchmarks report).
#pragma once
#include <cstddef>
#include <string>

namespace flashkernel {

struct DeviceInfo {
  int device = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  int sm_count = 0;
  std::size_t total_memory_bytes = 0;
  std::size_t l2_cache_bytes = 0;
  std::size_t shared_memory_per_block_optin = 0;
  int peak_sm_clock_khz = 0;
  int peak_memory_clock_khz = 0;
  int memory_bus_width_bits = 0;
  // 2 * memory clock * bus width (DDR), the datasheet ceiling; measured copies reach ~90% of it.
  double peak_memory_bandwidth_gbps() const {
    return 2.0 * peak_memory_clock_khz * 1e3 * (memory_bus_width_bits / 8.0) / 1e9;
  }
};

// Number of visible CUDA devices (0 when there is no driver or no GPU; never throws).
int device_count();

// Properties of `device` (-1: the current device). Throws ArgumentError for a bad index.
DeviceInfo device_info(int device = -1);

}  // namespace flashkernel
