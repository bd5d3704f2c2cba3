// gelu_linear's kernel configurations (tile shapes, pipeline depths, shared memory) and the
// choice among them by the device's shared-memory limit. Host-callable and free of device code,
// so a CPU test enumerates every configuration against every architecture's limit.
#pragma once
#include <cstdint>

#include "common/smem_budget.h"
#include "flashkernel/gelu_linear.h"

namespace flashkernel::gelu_linear_detail {

// One call's operands, as the kernels take them.
struct Problem {
  const void* x;
  const void* w;
  const void* bias;  // nullptr: no bias
  void* out;
  int m, n, k;
  GeluApproximation act;
};

// ------------------------------------------------------------------------------------------ tiled
template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int STAGES_, int MIN_BLOCKS_>
struct TiledConfig {
  static constexpr int BM = BM_, BN = BN_, BK = 64;
  static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, STAGES = STAGES_, MIN_BLOCKS = MIN_BLOCKS_;
  static constexpr int THREADS = WARPS_M * WARPS_N * 32;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;
  static constexpr int MI = WM / 16, NI = WN / 8;
  static constexpr int SMEM_BYTES = STAGES * (BM + BN) * BK * 2;
  static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile must be a multiple of 16x16");
  static_assert((BM * 8) % THREADS == 0 && (BN * 8) % THREADS == 0, "tile chunks must split evenly over threads");
};

// 128x128 tiles, 8 warps of 64x32, 3 stages (96 KiB): two CTAs per SM. Large M.
using TiledLarge = TiledConfig<128, 128, 2, 4, 3, 2>;
// 64x64 tiles, 4 warps of 32x32, 4 stages (64 KiB): 4x the CTAs where large tiles leave SMs idle.
using TiledSmall = TiledConfig<64, 64, 2, 2, 4, 3>;
// Both run wherever the library does (sm_80 and newer), so both must fit the smallest limit.
static_assert(TiledLarge::SMEM_BYTES <= detail::kMinSmemOptinBytes, "TiledLarge exceeds the sm_86/89 limit");
static_assert(TiledSmall::SMEM_BYTES <= detail::kMinSmemOptinBytes, "TiledSmall exceeds the sm_86/89 limit");

// ---------------------------------------------------------------------------------------- small_m
// Ring budgets of the weight-streaming kernel, deepest first. The bytes in flight per SM set its
// streaming bandwidth, so the ring is as deep as ~110 KiB allows (two CTAs per SM still fit on
// sm_90); where the device's opt-in limit is below that (99 KiB on sm_86/sm_89), the ring of the
// same tile takes the stages that fit that limit instead.
inline constexpr int kSmallMDeepBudget = 110 * 1024;
inline constexpr int kSmallMCompactBudget = detail::kMinSmemOptinBytes;

template <int MT_, int NT_, int kBudget = kSmallMDeepBudget>
struct SmallMConfig {
  static constexpr int MT = MT_;  // 16-row m tiles: M <= 16 * MT
  static constexpr int NT = NT_;  // 8-column n tiles per CTA
  static constexpr int BK = 256, THREADS = 128, WARPS = 4, WARP_K = BK / WARPS;
  static constexpr int ROWS_X = MT * 16, ROWS_W = NT * 8;
  static constexpr int STAGE_BYTES = (ROWS_X + ROWS_W) * BK * 2;
  static constexpr int STAGES = detail::stages_within(kBudget, STAGE_BYTES, 6);
  static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
  static_assert(STAGES >= 2, "small_m: ring too shallow");
  static_assert(WARPS * ROWS_X * ROWS_W * 4 <= SMEM_BYTES, "small_m: reduction buffer must fit the ring");
};

// Whether the (MT, NT) tile runs its deep ring on a device with `smem_optin_bytes` per block (else
// the compact one). The launcher and the limit test both use this one decision.
template <int MT, int NT>
constexpr bool small_m_uses_deep_ring(int smem_optin_bytes) {
  return SmallMConfig<MT, NT, kSmallMDeepBudget>::SMEM_BYTES <= smem_optin_bytes;
}

// Launches the (MT, NT) tile with the ring that fits `smem_optin_bytes` (instantiated in
// gelu_linear_small_m.cu; tests call it with another GPU's limit to run that GPU's choice).
template <typename T, int MT, int NT>
void launch_small_m(const Problem& p, int smem_optin_bytes, cudaStream_t stream);

// Shared memory of the (MT, NT) tile's launch on a device with `smem_optin_bytes` per block.
template <int MT, int NT>
constexpr int small_m_smem_bytes(int smem_optin_bytes) {
  return small_m_uses_deep_ring<MT, NT>(smem_optin_bytes) ? SmallMConfig<MT, NT, kSmallMDeepBudget>::SMEM_BYTES
                                                           : SmallMConfig<MT, NT, kSmallMCompactBudget>::SMEM_BYTES;
}

// ---------------------------------------------------------------------- Hopper warp-specialized
template <int kBlockN_, int kStages_, bool kPingPong_>
struct WsConfig {
  static constexpr int kBlockM = 128, kBlockN = kBlockN_, kBlockK = 64, kStages = kStages_;
  static constexpr bool kPingPong = kPingPong_;
  static constexpr int kThreads = 384;
  // A consumer's share of a tile: kMHalves m64 slices times kNHalves slices of kChunkN columns
  // (the wgmma's N: one m64n192 for 192-column tiles, m64n128 otherwise).
  static constexpr int kChunkN = kBlockN == 192 ? 192 : 128;
  static constexpr int kMHalves = kPingPong ? 2 : 1;
  static constexpr int kNHalves = kBlockN / kChunkN;
  static constexpr int kConsumersPerTile = kPingPong ? 1 : 2;
  static constexpr std::uint32_t kStageBytes = (kBlockM + kBlockN) * kBlockK * 2;
  static constexpr int kBiasBytes = 2 * kBlockN * 4;  // one fp32 row per consumer
  static constexpr int kSmemBytes = kStages * kStageBytes + kBiasBytes + 2 * kStages * 8 + 1024;  // + align slack
  static constexpr int kConsumerRegs = 240, kProducerRegs = 24;
  static_assert(kBlockN == 128 || kBlockN == 192 || kBlockN == 256, "kBlockN: 128, 192 or 256");
  static_assert(kMHalves * kBlockN <= 256, "at most 128 accumulators per consumer thread");
};
using WsWide = WsConfig<256, 4, false>;
using WsMid = WsConfig<192, 5, false>;
using WsNarrow = WsConfig<128, 6, false>;
using WsPingPong = WsConfig<128, 6, true>;

// Largest M, N and K the kernels take: their tile arithmetic is 32-bit (m + BM - 1 and the like,
// with tiles up to 256 rows), so each dimension stays 256 below 2^31.
inline constexpr std::int64_t kMaxExtent = (std::int64_t(1) << 31) - 256;

}  // namespace flashkernel::gelu_linear_detail
