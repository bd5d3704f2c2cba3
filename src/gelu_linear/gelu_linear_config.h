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
  // The weight-streaming kernel, launched as a programmatic dependent (pdl::launch inside a
  // DependentLaunches scope), pulls its W rows into L2 before it waits for the previous kernel.
  bool prefetch_w_l2 = false;
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
// Both fit every GPU from sm_80 on; sm_75 (64 KiB) has room for TiledSmall only (tiled_uses_large).
static_assert(TiledLarge::SMEM_BYTES <= detail::kMinSmemOptinBytes, "TiledLarge exceeds the sm_86/89 limit");
static_assert(TiledSmall::SMEM_BYTES <= detail::arch_smem_optin_bytes(75), "TiledSmall exceeds the sm_75 limit");

// Whether the large tiles may run on a device with `smem_optin_bytes` per block.
constexpr bool tiled_large_fits(int smem_optin_bytes) { return TiledLarge::SMEM_BYTES <= smem_optin_bytes; }

// Split-K for the 64x64 tiled kernel on sm_90 (a cluster of `split` CTAs per output tile, summed
// in distributed shared memory: gelu_linear_tiled_kernel), only where the output's tiles leave at
// least three quarters of the SMs without work (so even a split of 8 asks at most 2 CTAs per SM):
// then the widest of 8, 4, 2 that leaves each CTA at least 6 k-tiles of 64 (the ring's 4 stages
// and some); 1: no split. Measured on an H100 (132 SMs; gelu_linear.csv at d419c49, which split wherever the CTAs
// fit 3 per SM): 24 tiles won (M = 128, N = 768: 22.1 -> 11.0 us at K = 3072, split 8; 11.3 ->
// 10.3 us at K = 768, split 2), 96 tiles lost 3-10% (M = 512 N = 768 or M = 128 N = 3072: split 4
// at K = 3072, split 2 at K = 768).
constexpr int tiled_split_k(std::int64_t tiles, std::int64_t k, int sm_count) {
  if (4 * tiles > sm_count) return 1;
  const std::int64_t k_tiles = (k + TiledSmall::BK - 1) / TiledSmall::BK;
  for (int split : {8, 4, 2}) {
    if (k_tiles >= 6 * split) return split;
  }
  return 1;
}

// ---------------------------------------------------------------------------------------- small_m
// Ring budgets of the weight-streaming kernel, deepest first. The bytes in flight per SM set its
// streaming bandwidth, so the ring is as deep as ~110 KiB allows (two CTAs per SM still fit on
// sm_90); where the device's opt-in limit is below that, the ring of the same tile takes the
// stages that fit that limit instead: 99 KiB (sm_86/sm_89), then 64 KiB (sm_75, where the M = 33-64
// tiles fit no 2-stage ring and gelu_linear takes the 64x64 tiled kernel instead).
inline constexpr int kSmallMDeepBudget = 110 * 1024;
inline constexpr int kSmallMCompactBudget = detail::kMinSmemOptinBytes;
inline constexpr int kSmallMSm75Budget = detail::arch_smem_optin_bytes(75);

// One ring stage of the (MT, NT) tile: MT * 16 rows of x and NT * 8 of W, 256 16-bit elements each.
constexpr int small_m_stage_bytes(int mt, int nt) { return (mt * 16 + nt * 8) * 256 * 2; }
// Stages of its ring within `budget` (fewer than 2: the tile does not fit it).
constexpr int small_m_stages(int mt, int nt, int budget) {
  return detail::stages_within(budget, small_m_stage_bytes(mt, nt), 6);
}

// How the ring is filled. kThreadCopies (every GPU; M = 17-64 everywhere): 16-byte cp.async from
// every thread into swizzled 256-column rows. kTensorMaps (sm_90, M <= 16): per stage, thread 0
// issues one TMA copy per 64 columns of x and of W (8 copies, 128-byte swizzle, out-of-range rows
// and columns zero-filled by the copy), completing on an mbarrier. Few large copies win where many
// small ones lost: one cp.async.bulk per 512-byte row was 0.7-0.9x the thread copies on an H100
// (profiling/gelu_small_m_bulk_copies_h100.txt); for the tensor-map fill see small_m_tma_nt.
enum class SmallMCopy { kThreadCopies, kTensorMaps };

// kWarps: the warps of a CTA, each taking an equal K slice of every stage (4 in the library; the
// tuning sweep bench/cpp/gelu_small_m_variants_bench.cu also runs 8).
template <int MT_, int NT_, int kBudget = kSmallMDeepBudget, int kWarps = 4,
          SmallMCopy kCopy_ = SmallMCopy::kThreadCopies>
struct SmallMConfig {
  static constexpr int MT = MT_;  // 16-row m tiles: M <= 16 * MT
  static constexpr int NT = NT_;  // 8-column n tiles per CTA
  static constexpr SmallMCopy kCopy = kCopy_;
  static constexpr int BK = 256, WARPS = kWarps, THREADS = WARPS * 32, WARP_K = BK / WARPS;
  static_assert(WARP_K % 32 == 0, "small_m: a warp's K slice holds whole pairs of k16 steps");
  static constexpr int ROWS_X = MT * 16, ROWS_W = NT * 8;
  static constexpr int STAGE_BYTES = small_m_stage_bytes(MT, NT);
  static constexpr int STAGES = small_m_stages(MT, NT, kBudget);
  // TMA's 128-byte swizzle needs 1024-byte aligned boxes: slack to align the ring's start.
  static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + (kCopy == SmallMCopy::kTensorMaps ? 1024 : 0);
  static_assert(STAGES >= 2, "small_m: ring too shallow");
  static_assert(WARPS * ROWS_X * ROWS_W * 4 <= STAGES * STAGE_BYTES, "small_m: reduction buffer must fit the ring");
};

// The ring budget the (MT, NT) tile runs with on a device with `smem_optin_bytes` per block: the
// deepest of the three whose ring fits, 0 if none does. The launcher and the limit test both use
// this one decision.
template <int MT, int NT>
constexpr int small_m_budget(int smem_optin_bytes) {
  for (int budget : {kSmallMDeepBudget, kSmallMCompactBudget, kSmallMSm75Budget}) {
    const int stages = small_m_stages(MT, NT, budget);
    if (stages >= 2 && stages * small_m_stage_bytes(MT, NT) <= smem_optin_bytes) return budget;
  }
  return 0;
}

// Whether the (MT, NT) tile runs its deep ring there.
template <int MT, int NT>
constexpr bool small_m_uses_deep_ring(int smem_optin_bytes) {
  return small_m_budget<MT, NT>(smem_optin_bytes) == kSmallMDeepBudget;
}

// Launches the (MT, NT) tile with the ring small_m_budget picks for `smem_optin_bytes`
// (instantiated in gelu_linear_small_m.cu; tests call it with another GPU's limit to run that
// GPU's choice). The caller checks that some ring fits (small_m_budget > 0).
template <typename T, int MT, int NT>
void launch_small_m(const Problem& p, int smem_optin_bytes, cudaStream_t stream);

// The 64x64 tiled kernel split over K across a cluster of `split` CTAs (2, 4 or 8; sm_90;
// instantiated in gelu_linear_tiled.cu): false, launching nothing, when this build has no sm_90 code
// for it, `split` is not one of those, or K has fewer 64-column tiles than `split`.
template <typename T>
bool launch_tiled_split(const Problem& p, int split, cudaStream_t stream);

// The M <= 16 tile with its ring filled by TMA, 8 * NT columns per CTA (NT = 2, 4, 8; instantiated
// in gelu_linear_small_m.cu): false, launching nothing, when this build has no sm_90 code for it,
// the device's shared memory is too small, or TMA cannot describe x or W (the caller then takes
// the thread-copy kernel).
template <typename T, int NT>
bool launch_small_m_tma(const Problem& p, int smem_optin_bytes, cudaStream_t stream);

// The thread-copy kernel's column tile: 4 8-column tiles per CTA cut the re-reads of x (one per
// CTA, from L2) by 4x, worth it once N still gives >= 2 CTAs per SM; with fewer columns every CTA
// is needed to keep HBM busy (1).
constexpr int small_m_thread_nt(std::int64_t n, int sm_count) { return n / 32 >= 2 * std::int64_t(sm_count) ? 4 : 1; }

// gelu_linear's weight-streaming launch for M <= 16 * MT (instantiated in gelu_linear_small_m.cu):
// at MT = 1 the TMA-filled ring where launch_small_m_tma accepts, else the thread copies at
// small_m_thread_nt's tile; false when no ring of the tile fits the device (sm_75 and M > 32: the
// caller takes the tiled kernel).
template <typename T, int MT>
bool launch_small_m_for(const Problem& p, int sm_count, int smem_optin, cudaStream_t stream);

// Shared memory of the (MT, NT) tile's launch on a device with `smem_optin_bytes` per block (0:
// no ring of that tile fits there).
template <int MT, int NT>
constexpr int small_m_smem_bytes(int smem_optin_bytes) {
  const int budget = small_m_budget<MT, NT>(smem_optin_bytes);
  return budget == 0 ? 0 : small_m_stages(MT, NT, budget) * small_m_stage_bytes(MT, NT);
}

// The column tile of the TMA-filled M <= 16 kernel (sm_90): NT = 8, 4 or 2 8-column tiles per
// CTA, the widest that still gives about one CTA per SM (at least 0.9 * sm_count CTAs), else 2.
// Wider tiles re-read x fewer times and issue fewer, larger copies per byte; a TMA box of 8 W rows
// (NT = 1) measured 0.75-0.91x the thread copies at N = 4096. H200 (132 SMs), fp16/bf16, M = 1 /
// 16, against the thread-copy kernel: N = 16384 (K = 4096) NT = 8 1.12x / 1.30x; N = 4096 NT = 4
// 1.70-1.84x; N = 3072 (K = 768) and N = 768 (K = 3072) NT = 2 1.30-1.47x
// (bench/cpp/gelu_small_m_variants_bench.cu).
constexpr int small_m_tma_nt(std::int64_t n, int sm_count) {
  const std::int64_t tiles = (n + 7) / 8;
  for (int nt : {8, 4}) {
    if ((tiles + nt - 1) / nt * 10 >= 9 * std::int64_t(sm_count)) return nt;
  }
  return 2;
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
