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
  // Shared-memory rows are padded to whole 64-element swizzle rows (head_dim 32 -> 64, 80 and
  // 96 -> 128); the padding is never copied nor read: the mma loops stop at kHeadDim.
  static constexpr int kSmemRowElems = (kHeadDim + 63) / 64 * 64;
  static_assert(kRowsPerWarp % 16 == 0, "each warp owns whole 16-row mma tiles");
  static_assert(kBlockN % 16 == 0 && kHeadDim % 16 == 0, "tile shapes are multiples of the mma sizes");
  static constexpr int kSmemBytes = (kBlockM + 2 * kStages * kBlockN) * kSmemRowElems * 2;
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

// The extended instances' other head dims (window, softcap and varlen run on every head dim's
// extended instance; 64 and 128 reuse the configurations above).
// head_dim 32 (rows padded to 64): 128 x 128 keys (80 KiB); sm_75: 128 x 64 (48 KiB).
using ConfigD32 = TileConfig<32, 128, 128, 4, 2>;
using ConfigD32Compact = TileConfig<32, 128, 64, 4, 2>;
// head_dim 80 and 96 (rows padded to 128): 128 x 64 keys (96 KiB); sm_75: 128 x 32 (64 KiB).
using ConfigD80 = TileConfig<80, 128, 64, 4, 2>;
using ConfigD80Compact = TileConfig<80, 128, 32, 4, 2>;
using ConfigD96 = TileConfig<96, 128, 64, 4, 2>;
using ConfigD96Compact = TileConfig<96, 128, 32, 4, 2>;
// head_dim 256: 64 query rows (one 16-row mma tile per warp: O alone takes 128 registers per
// thread) x 32 keys (96 KiB); sm_75: 64 x 16 (64 KiB).
using ConfigD256 = TileConfig<256, 64, 32, 4, 2>;
using ConfigD256Compact = TileConfig<256, 64, 16, 4, 2>;
static_assert(ConfigD32::kSmemBytes <= detail::kMinSmemOptinBytes && ConfigD80::kSmemBytes <= detail::kMinSmemOptinBytes &&
                  ConfigD96::kSmemBytes <= detail::kMinSmemOptinBytes &&
                  ConfigD256::kSmemBytes <= detail::kMinSmemOptinBytes,
              "extended tiles exceed the sm_86/89 limit");
static_assert(ConfigD32Compact::kSmemBytes <= detail::arch_smem_optin_bytes(75) &&
                  ConfigD80Compact::kSmemBytes <= detail::arch_smem_optin_bytes(75) &&
                  ConfigD96Compact::kSmemBytes <= detail::arch_smem_optin_bytes(75) &&
                  ConfigD256Compact::kSmemBytes <= detail::arch_smem_optin_bytes(75),
              "extended compact tiles exceed sm_75's limit");

// Whether the device with `smem_optin_bytes` per block runs head_dim D's main configuration (else
// its compact one). The launcher and the CPU limit test share this one decision.
template <typename Main>
constexpr bool uses_main_config(int smem_optin_bytes) {
  return Main::kSmemBytes <= smem_optin_bytes;
}

}  // namespace flashkernel::attention::sm80
