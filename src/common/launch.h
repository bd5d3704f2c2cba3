// Launch-shape helpers shared by the elementwise / memory-bound kernels.
#pragma once
#include <algorithm>
#include <cstdint>

namespace flashkernel::detail {

constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Grid for a grid-stride loop over `work_items`: enough blocks to fill the GPU several times
// over, never more than the work needs, never above the launch limit.
inline unsigned grid_for(std::int64_t work_items, int threads_per_block, int sm_count, int blocks_per_sm = 16) {
  std::int64_t needed = ceil_div(work_items, threads_per_block);
  std::int64_t cap = std::int64_t(sm_count) * blocks_per_sm;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(needed, cap)));
}

// SM count of the current device, cached per device (cudaGetDeviceProperties is slow).
int current_sm_count();

}  // namespace flashkernel::detail
