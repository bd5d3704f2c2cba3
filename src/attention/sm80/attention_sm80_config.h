// Tile configurations of the portable (sm_80) attention kernel, host-callable so a CPU test can
// check their shared memory against every architecture's limit. The main configurations fit the
// smallest opt-in limit from sm_80 on (99 KiB, sm_86/sm_89); sm_75 (64 KiB) takes the compact ones.
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

// Where the device allows less than a main configuration (sm_75: 64 KiB), the same kernel with
// fewer keys per tile. The query tile stays 128 rows (2 mma tiles per warp, so each K/V fragment
// still feeds two mma); the 2-stage ring stays too, for the code's sake: on sm_75 its copies are
// synchronous (common/cp_async.cuh), and the overlap comes from the other warps' math instead.
// head_dim 64: 128 x 64 keys (48 KiB); head_dim 128: 128 x 32 keys (64 KiB).
using ConfigD64Compact = TileConfig<64, 128, 64, 4, 2>;
using ConfigD128Compact = TileConfig<128, 128, 32, 4, 2>;
static_assert(ConfigD64Compact::kSmemBytes <= detail::arch_smem_optin_bytes(75), "d=64 compact tiles exceed sm_75's limit");
static_assert(ConfigD128Compact::kSmemBytes <= detail::arch_smem_optin_bytes(75), "d=128 compact tiles exceed sm_75's limit");

// Whether the device with `smem_optin_bytes` per block runs head_dim D's main configuration (else
// its compact one). The launcher and the CPU limit test share this one decision.
template <typename Main>
constexpr bool uses_main_config(int smem_optin_bytes) {
  return Main::kSmemBytes <= smem_optin_bytes;
}

}  // namespace flashkernel::attention::sm80
