// gelu_linear on Hopper, warp-specialized and persistent: the attention kernel's pipeline
// (common/tma_sm90.cuh) applied to a GEMM. One block per SM loops over output tiles
// (grouped_tile_origin order, tile blockIdx.x, + gridDim.x, ...). Three warpgroups:
//   warpgroup 0, the producer: one thread issues TMA copies of the x tile [128][64] and the W tile
//     [kBlockN][64] of each 64-deep k-step into a kStages-deep ring (one `full` mbarrier per stage
//     carries the bytes) and gives most of its registers away (setmaxnreg);
//   warpgroups 1 and 2, the consumers: 64 rows x kBlockN columns each. Per k-step: wait `full`,
//     issue the step's wgmmas (both operands in shared memory), commit, then wait only for the
//     *previous* step's batch (wgmma.wait_group 1) and release that stage on its `empty` mbarrier,
//     so one batch is always queued behind the running one - no __syncthreads, no full drain.
// The epilogue (bias + GeLU on the fp32 accumulators, 4-byte stores) is not overlapped with this
// block's math, but the producer keeps filling the ring with the next tile's stages meanwhile.
// Tails need no code: TMA fills rows and columns past M, N, K with zeros; stores are bounds-checked.
//
// Shared memory: kBlockN = 256, 4 stages of (128 + 256) x 64 x 2 B = 192 KiB; kBlockN = 128,
// 6 stages of 32 KiB = 192 KiB. Registers: 2 x 128 x 240 + 128 x 24 = 64512 of 65536; a consumer
// holds kBlockN / 2 fp32 accumulators.
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

template <int kBlockN_, int kStages_>
struct WsConfig {
  static constexpr int kBlockM = 128, kBlockN = kBlockN_, kBlockK = 64, kStages = kStages_;
  static constexpr int kThreads = 384;
  static constexpr int kHalves = kBlockN / 128;  // m64n128 accumulators per consumer thread
  static constexpr std::uint32_t kStageBytes = (kBlockM + kBlockN) * kBlockK * 2;
  static constexpr int kSmemBytes = kStages * kStageBytes + 2 * kStages * 8 + 1024;  // + alignment slack
  static constexpr int kConsumerRegs = 240, kProducerRegs = 24;
  static_assert(kBlockN == 128 || kBlockN == 256, "kBlockN: one or two m64n128 wgmmas per k16");
};
using WsWide = WsConfig<256, 4>;
using WsNarrow = WsConfig<128, 6>;

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    gelu_linear_ws_kernel(const __grid_constant__ CUtensorMap tm_x, const __grid_constant__ CUtensorMap tm_w,
                          const Problem p) {
#if FK_WGMMA_AVAILABLE
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, BK = Cfg::kBlockK, kStages = Cfg::kStages;
  constexpr int kHalves = Cfg::kHalves;
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;

  extern __shared__ unsigned char smem_raw[];
  // TMA's and wgmma's 128-byte swizzle is anchored to 1024-byte boundaries (one 8-row atom).
  const std::uintptr_t base = (reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t(1023);
  T* sA = reinterpret_cast<T*>(base);  // [kStages][BM][BK]
  T* sB = sA + kStages * BM * BK;      // [kStages][BN][BK]
  std::uint64_t* full = reinterpret_cast<std::uint64_t*>(sB + kStages * BN * BK);
  std::uint64_t* empty = full + kStages;

  const int m = p.m, n = p.n;
  const int n_tiles = ((m + BM - 1) / BM) * ((n + BN - 1) / BN);
  const int k_steps = (p.k + BK - 1) / BK;
  // k-step number g of this block, counted over all its tiles: ring slot and phase parity.
  auto stage_of = [](int g) { return g % kStages; };
  auto parity_of = [](int g) { return std::uint32_t((g / kStages) & 1); };

  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], 2 * 128);  // every consumer thread releases the stage
    }
    fence_mbarrier_init();
  }
  __syncthreads();

  if (warpgroup == 0) {
    // ---------------- producer
    warpgroup_reg_dealloc<Cfg::kProducerRegs>();
    if (threadIdx.x == 0) {
      prefetch_tensor_map(&tm_x);
      prefetch_tensor_map(&tm_w);
      int g = 0;
      for (int t = blockIdx.x; t < n_tiles; t += gridDim.x) {
        int m0, n0;
        grouped_tile_origin<BM, BN>(m, n, t, m0, n0);
        for (int ks = 0; ks < k_steps; ++ks, ++g) {
          const int s = stage_of(g);
          mbarrier_wait(&empty[s], parity_of(g) ^ 1);  // the consumers are done with its last step
          mbarrier_arrive_expect_tx(&full[s], Cfg::kStageBytes);
          tma_load_4d(sA + s * BM * BK, &tm_x, &full[s], ks * BK, m0, 0, 0);
          tma_load_4d(sB + s * BN * BK, &tm_w, &full[s], ks * BK, n0, 0, 0);
        }
      }
    }
  } else {
    // ---------------- consumers
    warpgroup_reg_alloc<Cfg::kConsumerRegs>();
    const int cw = warpgroup - 1;  // 64-row half of the tile
    const int lane = threadIdx.x % 32, warp = (threadIdx.x % 128) / 32;
    T* out = static_cast<T*>(p.out);
    const T* bias = static_cast<const T*>(p.bias);
    int g = 0;
    for (int t = blockIdx.x; t < n_tiles; t += gridDim.x) {
      int m0, n0;
      grouped_tile_origin<BM, BN>(m, n, t, m0, n0);
      float acc[kHalves][64];
#pragma unroll
      for (int h = 0; h < kHalves; ++h)
#pragma unroll
        for (int i = 0; i < 64; ++i) acc[h][i] = 0.f;

      for (int ks = 0; ks < k_steps; ++ks, ++g) {
        const int s = stage_of(g);
        mbarrier_wait(&full[s], parity_of(g));
        const std::uint64_t da = wgmma_desc_sw128(sA + s * BM * BK + cw * 64 * BK);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {  // 16 elements = +32 bytes inside the 128-byte row
#pragma unroll
          for (int h = 0; h < kHalves; ++h) {
            const std::uint64_t db = wgmma_desc_sw128(sB + s * BN * BK + h * 128 * BK);
            wgmma_ss<128, kBf16>(acc[h], wgmma_desc_advance(da, kk * 32), wgmma_desc_advance(db, kk * 32), true);
          }
        }
        wgmma_commit_group();
        wgmma_wait_group<1>();  // the previous step's batch is done: its stage can be refilled
        if (ks > 0) mbarrier_arrive(&empty[stage_of(g - 1)]);
      }
      wgmma_wait_group<0>();
      mbarrier_arrive(&empty[stage_of(g - 1)]);

      // Epilogue: accumulator d[4j + 0..1] is (row 16w + l/4, cols 8j + 2(l%4) + 0..1), d[4j + 2..3]
      // the same columns 8 rows down (wgmma_sm90.cuh).
      const int row = m0 + cw * 64 + warp * 16 + lane / 4;
      with_gelu_form(p.act, [&](auto form) {
#pragma unroll
        for (int h = 0; h < kHalves; ++h) {
#pragma unroll
          for (int j = 0; j < 16; ++j) {
            const int col = n0 + h * 128 + j * 8 + (lane % 4) * 2;
            store_pair<decltype(form)::value>(out, bias, row, col, m, n, acc[h][4 * j], acc[h][4 * j + 1]);
            store_pair<decltype(form)::value>(out, bias, row + 8, col, m, n, acc[h][4 * j + 2], acc[h][4 * j + 3]);
          }
        }
      });
    }
  }
#else
  __trap();  // never launched: the host checks the kernel was built for sm_90a
#endif
}

// A [rows][k] row-major matrix as a TMA map with boxes of [box_rows][64] (the other two of the
// four dimensions are 1).
bool make_matrix_map(CUtensorMap* map, const void* ptr, DType dtype, int rows, int k, int box_rows) {
  const std::uint64_t row_bytes = std::uint64_t(k) * 2;
  const std::uint64_t dims[4] = {std::uint64_t(k), std::uint64_t(rows), 1, 1};
  const std::uint64_t strides[3] = {row_bytes, row_bytes * rows, row_bytes * rows};
  const std::uint32_t box[4] = {64, std::uint32_t(box_rows), 1, 1};
  return detail::make_tensor_map_4d(map, ptr, dtype, dims, strides, box);
}

template <typename T, typename Cfg>
bool launch_ws_with(const Problem& p, int sm_count, cudaStream_t stream) {
  constexpr auto kernel = gelu_linear_ws_kernel<T, Cfg>;
  if (!detail::kernel_has_sm90a_code<kernel>()) return false;
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

template <typename T>
bool launch_wgmma_ws(const Problem& p, int sm_count, cudaStream_t stream) {
  // 128x256 tiles read 25% fewer operand bytes per flop than 128x128 ones; take the narrow tile
  // only where the wide one leaves much of the last wave idle (e.g. N = 768: 3 column tiles).
  const std::int64_t tiles_m = detail::ceil_div(p.m, 128);
  const double wide = wave_efficiency(tiles_m * detail::ceil_div(p.n, 256), sm_count);
  const double narrow = wave_efficiency(tiles_m * detail::ceil_div(p.n, 128), sm_count);
  if (narrow > wide + 0.1) return launch_ws_with<T, WsNarrow>(p, sm_count, stream);
  return launch_ws_with<T, WsWide>(p, sm_count, stream);
}

template bool launch_wgmma_ws<__half>(const Problem&, int, cudaStream_t);
template bool launch_wgmma_ws<__nv_bfloat16>(const Problem&, int, cudaStream_t);

}  // namespace flashkernel::gelu_linear_detail
