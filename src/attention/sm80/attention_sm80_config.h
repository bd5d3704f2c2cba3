// Tile configurations of the portable (sm_80) attention kernel, host-callable so a CPU test can
// check their shared memory against every architecture's limit. The kernel runs on every GPU
// from sm_80 on, so each configuration must fit the smallest opt-in limit (99 KiB, sm_86/sm_89).
#pragma once

#include "common/smem_budget.h"

namespace flashkernel::attention::sm80 {

template <int kHeadDim_, int kBlockM_, int kBlockN_, int kWarps_, int kStages_>
struct TileConfig {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kWarps = kWarps_;
  static constexpr int kStages = kStages_;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRowsPerWarp = kBlockM / kWarps;
  static constexpr int kMTiles = kRowsPerWarp / 16;
  static_assert(kRowsPerWarp % 16 == 0, "each warp owns whole 16-row mma tiles");
  static_assert(kBlockN % 16 == 0 && kHeadDim % 64 == 0, "tile shapes are multiples of the mma/swizzle sizes");
  static constexpr int kSmemBytes = (kBlockM + 2 * kStages * kBlockN) * kHeadDim * 2;
};

// head_dim 64: 128 query rows x 128 keys, 4 warps, 2-stage K/V ring (80 KiB).
using ConfigD64 = TileConfig<64, 128, 128, 4, 2>;
// head_dim 128: 128 query rows x 64 keys, 4 warps, 2-stage K/V ring (96 KiB).
using ConfigD128 = TileConfig<128, 128, 64, 4, 2>;
static_assert(ConfigD64::kSmemBytes <= detail::kMinSmemOptinBytes, "d=64 tiles exceed the sm_86/89 limit");
static_assert(ConfigD128::kSmemBytes <= detail::kMinSmemOptinBytes, "d=128 tiles exceed the sm_86/89 limit");

}  // namespace flashkernel::attention::sm80
