// gelu_linear on Hopper, warp-specialized and persistent: the attention kernel's pipeline
// (common/tma_sm90.cuh) applied to a GEMM. One block per SM loops over output tiles
// (grouped_tile_origin order: tiles blockIdx.x, + gridDim.x, ...). Three warpgroups:
//   warpgroup 0, the producer: one thread issues TMA copies of the x tile [128][64] and the W tile
//     [kBlockN][64] of each 64-deep k-step into a kStages-deep ring (one `full` mbarrier per stage
//     carries the bytes), tile after tile, and gives most of its registers away (setmaxnreg);
//   warpgroups 1 and 2, the consumers. Per k-step: wait `full`, issue the step's wgmmas (both
//     operands in shared memory), commit, then wait only for the *previous* step's batch
//     (wgmma.wait_group 1) and release that stage on its `empty` mbarrier, so one batch is always
//     queued behind the running one - no __syncthreads, no full drain.
// Two ways to split the work between the consumers (kPingPong):
//   cooperative: both take every tile, 64 rows x kBlockN each. The epilogue (bias + GeLU on the fp32
//     accumulators, then stores) leaves the tensor cores idle; only the producer keeps working.
//   ping-pong: each takes every other tile, all 128 rows (kBlockN = 128), so one consumer's math
//     runs while the other does its epilogue: the epilogue is hidden when it is shorter than a
//     tile's math (small K). The mainloops take turns (named barriers kOrderBarrier + cw: a
//     consumer starts tile i's wgmmas only after the other issued tile i-1's): the ring's k-steps
//     are then consumed in order, which the mbarrier parities require - a consumer waiting on a
//     stage two phases ahead would see the parity of an old phase and read stale data.
// The bias of a consumer's tile is staged in shared memory as fp32 at the tile's start (its loads
// complete under the math) instead of being loaded from global memory per output pair in the
// epilogue, where those loads were the top stall. Tails need no code: TMA fills rows and columns
// past M, N, K with zeros; stores are bounds-checked.
//
// In code, as the attention kernel: GemmSmem (layout and barriers), produce(), consume() (bias
// staging, mainloop, epilogue) and a thin kernel composing them.
//
// Shared memory: kBlockN = 256, 4 stages of (128 + 256) x 64 x 2 B = 192 KiB; 192, 5 stages of
// 40 KiB = 200 KiB; 128, 6 stages of 32 KiB = 192 KiB; + up to 2 KiB of bias. Registers:
// 2 x 128 x 240 + 128 x 24 = 64512 of 65536; a consumer holds 128 (kBlockN 256 or ping-pong),
// 96 or 64 fp32 accumulators.
#include <cuda.h>

#include <algorithm>
#include <type_traits>

#include "common/tensor_map.h"
#include "common/tma_sm90.cuh"
#include "common/wgmma_sm90.cuh"
#include "gelu_linear/gelu_linear_kernels.cuh"
#include "gelu_linear/gelu_linear_launch.cuh"

namespace flashkernel::gelu_linear_detail {
namespace {

// Configurations (WsWide, WsMid, WsNarrow, WsPingPong): gelu_linear_config.h.

// Named barrier ids (0 is __syncthreads): per consumer, the bias-staging barrier of its 128
// threads, and (ping-pong) the turn barrier the other consumer arrives on when its mainloop is issued.
// An enum, not constexpr ints: the sm_80 pass compiles the kernel body out and would warn (#177-D).
enum NamedBarrier : int { kBiasBarrier = 1, kOrderBarrier = 3 };

// Shared memory: the x/W ring, the consumers' bias rows (fp32) and the ring's mbarriers. k-step
// number g of a block, counted over all its tiles, sits in ring slot Ring::slot(g).
template <typename T, typename Cfg>
struct GemmSmem {
  using Ring = RingStep<Cfg::kStages>;
  T* sA;          // [kStages][BM][BK]
  T* sB;          // [kStages][BN][BK]
  float* s_bias;  // [2 consumers][BN]
  std::uint64_t *full, *empty;

  __device__ __forceinline__ explicit GemmSmem(unsigned char* smem_raw) {
    constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, BK = Cfg::kBlockK, kStages = Cfg::kStages;
    // TMA's and wgmma's 128-byte swizzle is anchored to 1024-byte boundaries (one 8-row atom).
    const std::uintptr_t base = (reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t(1023);
    sA = reinterpret_cast<T*>(base);
    sB = sA + kStages * BM * BK;
    // Derived from smem_raw by pointer arithmetic (not through the integer `base`), so the compiler
    // still knows it is shared memory and reads it with LDS instead of generic loads.
    s_bias = reinterpret_cast<float*>(smem_raw + (base - reinterpret_cast<std::uintptr_t>(smem_raw)) +
                                      kStages * (BM + BN) * BK * 2);
    full = reinterpret_cast<std::uint64_t*>(s_bias + 2 * BN);
    empty = full + kStages;
  }

  // Thread 0, before the roles split.
  __device__ __forceinline__ void init_barriers() const {
    for (int s = 0; s < Cfg::kStages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], Cfg::kConsumersPerTile * 128);  // every thread that read it releases it
    }
    fence_mbarrier_init();
  }
};

// The producer: one thread issues the x and W tiles of every k-step of the block's tiles.
template <typename T, typename Cfg>
__device__ __forceinline__ void produce(const GemmSmem<T, Cfg>& sm, const Problem& p, int n_tiles, int k_steps,
                                        const CUtensorMap* tm_x, const CUtensorMap* tm_w) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, BK = Cfg::kBlockK;
  using Ring = typename GemmSmem<T, Cfg>::Ring;
  if (threadIdx.x != 0) return;
  prefetch_tensor_map(tm_x);
  prefetch_tensor_map(tm_w);
  int g = 0;
  for (int t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    int m0, n0;
    grouped_tile_origin<BM, BN>(p.m, p.n, t, m0, n0);
    for (int ks = 0; ks < k_steps; ++ks, ++g) {
      const int s = Ring::slot(g);
      mbarrier_wait(&sm.empty[s], Ring::parity(g) ^ 1);  // the consumers are done with its last step
      mbarrier_arrive_expect_tx(&sm.full[s], Cfg::kStageBytes);
      tma_load_4d(sm.sA + s * BM * BK, tm_x, &sm.full[s], ks * BK, m0, 0, 0);
      tma_load_4d(sm.sB + s * BN * BK, tm_w, &sm.full[s], ks * BK, n0, 0, 0);
    }
  }
}

// Consumer cw (0 or 1): per tile, stage the bias, run the mainloop, then the epilogue.
template <typename T, typename Cfg>
__device__ __forceinline__ void consume(const GemmSmem<T, Cfg>& sm, const Problem& p, int n_tiles, int k_steps,
                                        int cw) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, BK = Cfg::kBlockK;
  constexpr int kMH = Cfg::kMHalves, kNH = Cfg::kNHalves, kCN = Cfg::kChunkN;
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  using Ring = typename GemmSmem<T, Cfg>::Ring;
  const int m = p.m, n = p.n;
  const int tid = threadIdx.x % 128, lane = tid % 32, warp = tid / 32;
  const int row_base = Cfg::kPingPong ? 0 : cw * 64;  // first tile row of this consumer's share
  T* out = static_cast<T*>(p.out);
  const T* bias = static_cast<const T*>(p.bias);
  float* my_bias = sm.s_bias + cw * BN;
  // Ping-pong: this consumer takes every other tile of the block's sequence (the i-th tile's
  // k-steps are ring steps i * k_steps ...).
  const int first = Cfg::kPingPong ? cw : 0, stride = Cfg::kPingPong ? 2 : 1;
  int i = first;
  for (int t = blockIdx.x + first * gridDim.x; t < n_tiles; t += stride * gridDim.x, i += stride) {
    int m0, n0;
    grouped_tile_origin<BM, BN>(m, n, t, m0, n0);
    // Stage this tile's bias (fp32, zero past N or without bias); the previous epilogue's reads
    // of my_bias are complete once every thread of this warpgroup reaches the barrier.
    named_barrier_sync(kBiasBarrier + cw, 128);
    for (int c = tid; c < BN; c += 128) {
      my_bias[c] = (bias != nullptr && n0 + c < n) ? to_float(bias[n0 + c]) : 0.f;
    }

    float acc[kMH * kNH][kCN / 2];
#pragma unroll
    for (int a = 0; a < kMH * kNH; ++a)
#pragma unroll
      for (int e = 0; e < kCN / 2; ++e) acc[a][e] = 0.f;

    // Ping-pong: wait for the other consumer to have issued tile i-1's math (tile 0 goes first).
    if (Cfg::kPingPong && i > 0) named_barrier_sync(kOrderBarrier + cw, 256);
    int g = i * k_steps;
    for (int ks = 0; ks < k_steps; ++ks, ++g) {
      const int s = Ring::slot(g);
      mbarrier_wait(&sm.full[s], Ring::parity(g));
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {  // 16 elements = +32 bytes inside the 128-byte row
#pragma unroll
        for (int mh = 0; mh < kMH; ++mh) {
          const std::uint64_t da = wgmma_desc_sw128(sm.sA + s * BM * BK + (row_base + mh * 64) * BK);
#pragma unroll
          for (int nh = 0; nh < kNH; ++nh) {
            const std::uint64_t db = wgmma_desc_sw128(sm.sB + s * BN * BK + nh * kCN * BK);
            wgmma_ss<kCN, kBf16>(acc[mh * kNH + nh], wgmma_desc_advance(da, kk * 32), wgmma_desc_advance(db, kk * 32),
                                 true);
          }
        }
      }
      wgmma_commit_group();
      wgmma_wait_group<1>();  // the previous step's batch is done: its stage can be refilled
      if (ks > 0) mbarrier_arrive(&sm.empty[Ring::slot(g - 1)]);
    }
    // Ping-pong: the other consumer's turn (if it has a tile i+1); its wgmmas queue behind ours.
    if (Cfg::kPingPong && t + gridDim.x < n_tiles) named_barrier_arrive(kOrderBarrier + (1 - cw), 256);
    wgmma_wait_group<0>();
    mbarrier_arrive(&sm.empty[Ring::slot(g - 1)]);
    named_barrier_sync(kBiasBarrier + cw, 128);  // my_bias is written

    // Epilogue: accumulator d[4j + 0..1] is (row 16w + l/4, cols 8j + 2(l%4) + 0..1), d[4j + 2..3]
    // the same columns 8 rows down (wgmma_sm90.cuh). Per output row one base pointer, so each
    // store's address is that pointer plus a constant; the bounds checks predicate the stores
    // only (a branch around each pair's math cost more than the math).
    const int col_in_tile = (lane % 4) * 2;
    const int cols_left = n - n0 - col_in_tile;  // this thread's columns c with c < cols_left exist
    with_gelu_form(p.act, [&](auto form) {
#pragma unroll
      for (int mh = 0; mh < kMH; ++mh) {
#pragma unroll
        for (int r8 = 0; r8 < 2; ++r8) {
          const int row = m0 + row_base + mh * 64 + warp * 16 + lane / 4 + r8 * 8;
          const bool row_ok = row < m;
          T* out_row = out + std::int64_t(row_ok ? row : 0) * n + n0 + col_in_tile;
#pragma unroll
          for (int nh = 0; nh < kNH; ++nh) {
#pragma unroll
            for (int j = 0; j < kCN / 8; ++j) {
              const int c = nh * kCN + j * 8;
              const float2 b = *reinterpret_cast<const float2*>(my_bias + c + col_in_tile);
              const float* d = &acc[mh * kNH + nh][4 * j + 2 * r8];
              const std::uint32_t packed = pack_float2<T>(apply_gelu<decltype(form)::value>(d[0] + b.x),
                                                          apply_gelu<decltype(form)::value>(d[1] + b.y));
              if (row_ok && c < cols_left) *reinterpret_cast<std::uint32_t*>(out_row + c) = packed;
            }
          }
        }
      }
    });
  }
}

// Composes the pieces: warpgroup 0 produces, warpgroups 1 and 2 consume.
template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    gelu_linear_ws_kernel(const __grid_constant__ CUtensorMap tm_x, const __grid_constant__ CUtensorMap tm_w,
                          const Problem p) {
#if FK_WGMMA_AVAILABLE
  extern __shared__ unsigned char smem_raw[];
  const GemmSmem<T, Cfg> sm(smem_raw);
  const int n_tiles = ((p.m + Cfg::kBlockM - 1) / Cfg::kBlockM) * ((p.n + Cfg::kBlockN - 1) / Cfg::kBlockN);
  const int k_steps = (p.k + Cfg::kBlockK - 1) / Cfg::kBlockK;
  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) sm.init_barriers();
  __syncthreads();
  if (warpgroup == 0) {
    warpgroup_reg_dealloc<Cfg::kProducerRegs>();
    produce(sm, p, n_tiles, k_steps, &tm_x, &tm_w);
  } else {
    warpgroup_reg_alloc<Cfg::kConsumerRegs>();
    consume(sm, p, n_tiles, k_steps, warpgroup - 1);
  }
#else
  __trap();  // never launched: the host checks the kernel was built for sm_90a
#endif
}

template <typename T, typename Cfg>
bool launch_ws_with(const Problem& p, int sm_count, cudaStream_t stream) {
  constexpr auto kernel = gelu_linear_ws_kernel<T, Cfg>;
  if (!detail::sm90a_kernel_can_run<kernel>(Cfg::kSmemBytes)) return false;  // mma.sync kernels instead
  CUtensorMap tm_x, tm_w;
  if (!make_matrix_map(&tm_x, p.x, dtype_of<T>(), p.m, p.k, Cfg::kBlockM) ||
      !make_matrix_map(&tm_w, p.w, dtype_of<T>(), p.n, p.k, Cfg::kBlockN)) {
    return false;
  }
  ensure_smem_opt_in<kernel>(Cfg::kSmemBytes);
  const std::int64_t tiles = detail::ceil_div(p.m, Cfg::kBlockM) * detail::ceil_div(p.n, Cfg::kBlockN);
  const auto grid = static_cast<unsigned>(std::min<std::int64_t>(tiles, sm_count));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(tm_x, tm_w, p);
  FK_CHECK_LAUNCH();
  return true;
}

// Fraction of the block slots of the last wave that have work: tiles / (waves * sm_count).
double wave_efficiency(std::int64_t tiles, int sm_count) {
  const std::int64_t waves = detail::ceil_div(tiles, sm_count);
  return double(tiles) / double(waves * sm_count);
}

}  // namespace

bool make_matrix_map(CUtensorMap* map, const void* ptr, DType dtype, int rows, int k, int box_rows) {
  const std::uint64_t row_bytes = std::uint64_t(k) * 2;
  const std::uint64_t dims[4] = {std::uint64_t(k), std::uint64_t(rows), 1, 1};
  const std::uint64_t strides[3] = {row_bytes, row_bytes * rows, row_bytes * rows};
  const std::uint32_t box[4] = {64, std::uint32_t(box_rows), 1, 1};
  return detail::make_tensor_map_4d(map, ptr, dtype, dims, strides, box);
}

template <typename T>
bool launch_wgmma_ws(const Problem& p, int sm_count, cudaStream_t stream, GeluLinearBackend backend) {
  switch (backend) {  // one variant asked for by name (how the tests cover each and the benchmark compares them)
    case GeluLinearBackend::kSm90Wide: return launch_ws_with<T, WsWide>(p, sm_count, stream);
    case GeluLinearBackend::kSm90Mid: return launch_ws_with<T, WsMid>(p, sm_count, stream);
    case GeluLinearBackend::kSm90Narrow: return launch_ws_with<T, WsNarrow>(p, sm_count, stream);
    case GeluLinearBackend::kSm90PingPong: return launch_ws_with<T, WsPingPong>(p, sm_count, stream);
    default: break;
  }
  // Small K (<= 16 k-steps): a tile's math is short next to its epilogue, which ping-pong hides
  // (measured best at K = 768 on H100). Otherwise the widest tile whose last wave is about as full
  // as the best one's: wider tiles read fewer operand bytes per flop (128x256: 11.7 KiB per
  // MFLOP, 128x192: 12.5, 128x128: 15.6), and operand traffic from L2 is what limits these
  // kernels (e.g. N = 768: 3 column tiles of 256 leave a quarter of the last wave idle, 4 of 192
  // fill it).
  if (detail::ceil_div(p.k, 64) <= 16) return launch_ws_with<T, WsPingPong>(p, sm_count, stream);
  const std::int64_t tiles_m = detail::ceil_div(p.m, 128);
  const double wide = wave_efficiency(tiles_m * detail::ceil_div(p.n, 256), sm_count);
  const double mid = wave_efficiency(tiles_m * detail::ceil_div(p.n, 192), sm_count);
  const double narrow = wave_efficiency(tiles_m * detail::ceil_div(p.n, 128), sm_count);
  const double best = std::max({wide, mid, narrow});
  if (wide >= best - 0.05) return launch_ws_with<T, WsWide>(p, sm_count, stream);
  if (mid >= best - 0.05) return launch_ws_with<T, WsMid>(p, sm_count, stream);
  return launch_ws_with<T, WsNarrow>(p, sm_count, stream);
}

template bool launch_wgmma_ws<__half>(const Problem&, int, cudaStream_t, GeluLinearBackend);
template bool launch_wgmma_ws<__nv_bfloat16>(const Problem&, int, cudaStream_t, GeluLinearBackend);

}  // namespace flashkernel::gelu_linear_detail
