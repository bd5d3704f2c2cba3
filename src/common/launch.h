// Launch-shape helpers shared by the elementwise / memory-bound kernels.
#pragma once
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <mutex>

#include "common/cuda_check.h"

namespace flashkernel::detail {

constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Grid for a grid-stride loop over `work_items`: enough blocks to fill the GPU several times
// over, never more than the work needs, never above the launch limit.
inline unsigned grid_for(std::int64_t work_items, int threads_per_block, int sm_count, int blocks_per_sm = 16) {
  std::int64_t needed = ceil_div(work_items, threads_per_block);
  std::int64_t cap = std::int64_t(sm_count) * blocks_per_sm;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(needed, cap)));
}

// A value computed once per device and then reused: device queries (properties, occupancy) are
// slow and their answers never change. Each call site keeps its own static instance.
class PerDeviceCache {
 public:
  // compute(device) runs the first time the current device asks (and for devices >= 64, always).
  template <typename Compute>
  int get(Compute&& compute) {
    int device = 0;
    FK_CUDA_CHECK(cudaGetDevice(&device));
    if (device >= kMaxDevices) return compute(device);
    std::lock_guard<std::mutex> lock(mutex_);
    if (values_[device] == 0) values_[device] = compute(device);
    return values_[device];
  }

 private:
  static constexpr int kMaxDevices = 64;
  std::array<int, kMaxDevices> values_{};
  std::mutex mutex_;
};

// SM count of the current device, cached per device.
int current_sm_count();

}  // namespace flashkernel::detail
