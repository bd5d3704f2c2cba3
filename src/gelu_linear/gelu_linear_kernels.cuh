// Kernels of gelu_linear (sm_80 tensor-core path, also run on Hopper). Two designs:
//
//  * tiled: a CTA computes a BM x BN output tile over all of K. x and W tiles (BK = 64 columns,
//    16-bit) stream through a STAGES-deep cp.async ring in swizzled shared memory; warps read them
//    with ldmatrix and run mma.sync m16n8k16 into fp32 registers; the epilogue adds the bias, applies
//    GeLU and stores straight from the accumulators. x @ W^T is the "TN" case: both operands are
//    K-contiguous, so non-transposed ldmatrix yields both fragments.
//  * small_m (M <= 64, decode): a 128-row tile would be mostly padding and a CTA per 128 output
//    columns would leave most SMs idle while the weight - the only real traffic - is read once. A
//    CTA here owns just 8*NT output columns (so N/8 CTAs exist for N = 768), streams those W rows
//    through a deep ring of BK = 256 stages, and its 4 warps split each stage along K (64 columns
//    each); the 4 partial sums meet in shared memory before the epilogue.
//
// The activation and the bias are runtime arguments: the epilogue's branch is uniform and costs
// nothing next to the K loop, and it halves the template instantiations (compile time).
#pragma once
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/activations.cuh"
#include "common/cp_async.cuh"
#include "common/dependent_launch.cuh"
#include "common/dtype_traits.cuh"
#include "common/mma_sm80.cuh"
#include "common/tma_sm90.cuh"
#include "flashkernel/gelu_linear.h"
#include "gelu_linear/gelu_linear_config.h"

namespace flashkernel::gelu_linear_detail {

template <GeluApproximation kAct>
__device__ __forceinline__ float apply_gelu(float v) {
  if constexpr (kAct == GeluApproximation::kTanh) return gelu_tanh(v);
  else return gelu_erf(v);
}

// Runs epilogue(form) with form an std::integral_constant of the runtime GeLU form: the branch is
// taken once per tile, and each element's code is the one form's straight line (a per-element
// branch over both inlined forms doubled the epilogue's code and stalled it on instruction fetch).
template <typename F>
__device__ __forceinline__ void with_gelu_form(GeluApproximation act, F&& epilogue) {
  if (act == GeluApproximation::kTanh) {
    epilogue(std::integral_constant<GeluApproximation, GeluApproximation::kTanh>{});
  } else {
    epilogue(std::integral_constant<GeluApproximation, GeluApproximation::kNone>{});
  }
}

// GeLU and a 4-byte store of two adjacent outputs (cols col, col+1 of `row`), bias already added.
template <GeluApproximation kAct, typename T>
__device__ __forceinline__ void store_gelu_pair(T* out, int row, int col, int m, int n, float v0, float v1) {
  if (row >= m || col >= n) return;  // n % 8 == 0 and col even: col < n implies col + 1 < n
  *reinterpret_cast<std::uint32_t*>(out + std::int64_t(row) * n + col) =
      pack_float2<T>(apply_gelu<kAct>(v0), apply_gelu<kAct>(v1));
}

// Bias (read from global memory), GeLU and the store of two adjacent outputs.
template <GeluApproximation kAct, typename T>
__device__ __forceinline__ void store_pair(T* out, const T* bias, int row, int col, int m, int n, float v0,
                                           float v1) {
  if (bias != nullptr && col < n) {
    v0 += to_float(bias[col]);
    v1 += to_float(bias[col + 1]);
  }
  store_gelu_pair<kAct>(out, row, col, m, n, v0, v1);
}

// Grouped raster: kGroupM consecutive M-tiles sweep the N-tiles together, so the W panel a group
// reads stays in L2 while it is reused (matters when W is larger than L2, e.g. 4096 x 16384).
template <int BM, int BN>
__device__ __forceinline__ void grouped_tile_origin(int m, int n, int pid, int& m0, int& n0) {
  constexpr int kGroupM = 8;
  const int tiles_m = (m + BM - 1) / BM, tiles_n = (n + BN - 1) / BN;
  const int group = pid / (kGroupM * tiles_n);
  const int first_m = group * kGroupM;
  const int group_rows = min(tiles_m - first_m, kGroupM);
  const int in_group = pid % (kGroupM * tiles_n);
  m0 = (first_m + in_group % group_rows) * BM;
  n0 = (in_group / group_rows) * BN;
}

// cp.async copies of one BK = 64 column stage of the x tile [BM rows] and the W tile [BN rows] into
// SwizzledTile<64> shared memory, zero-filling rows and columns past the tensors' ends.
// Each thread copies chunk (tid % 8) of rows tid / 8 + i * kRowStep. kRowStep is a multiple of 8,
// so the swizzle is the same for all of a thread's rows: one smem offset, one source pointer and
// a row-validity mask per operand, instead of per-chunk index math (register pressure).
template <typename T, int BM, int BN, int BK, int THREADS>
struct TileLoader {
  static_assert(BK == 64, "TileLoader: 8 chunks per row");
  static constexpr int kRowStep = THREADS / 8, A_ITERS = BM / kRowStep, B_ITERS = BN / kRowStep;
  static_assert(kRowStep % 8 == 0 && BM % kRowStep == 0 && BN % kRowStep == 0, "TileLoader: uneven split");
  const T* x;
  const T* w;
  const T* a_src;
  const T* b_src;
  std::int64_t step;
  int k, ld_col, ld_smem;
  std::uint32_t a_rows_ok = 0, b_rows_ok = 0;

  __device__ __forceinline__ TileLoader(const Problem& p, int m0, int n0, int tid)
      : x(static_cast<const T*>(p.x)), w(static_cast<const T*>(p.w)), k(p.k) {
    const int ld_row = tid / 8;
    ld_col = (tid % 8) * 8;
    ld_smem = SwizzledTile<BK>::offset(ld_row, ld_col);
    step = std::int64_t(kRowStep) * k;
    // Rows past the end are clamped to row 0 (a valid address) and zero-filled.
    a_src = x + std::int64_t(m0 + ld_row < p.m ? m0 + ld_row : 0) * k + ld_col;
    b_src = w + std::int64_t(n0 + ld_row < p.n ? n0 + ld_row : 0) * k + ld_col;
#pragma unroll
    for (int i = 0; i < A_ITERS; ++i) a_rows_ok |= std::uint32_t(m0 + ld_row + i * kRowStep < p.m) << i;
#pragma unroll
    for (int i = 0; i < B_ITERS; ++i) b_rows_ok |= std::uint32_t(n0 + ld_row + i * kRowStep < p.n) << i;
  }

  // Copies columns [k0, k0 + BK) into the stage at (a, b).
  __device__ __forceinline__ void load(T* a, T* b, int k0) const {
    const bool col_ok = k0 + ld_col < k;  // k % 8 == 0: a chunk is all in or all out
#pragma unroll
    for (int i = 0; i < A_ITERS; ++i) {
      const bool ok = col_ok && ((a_rows_ok >> i) & 1u);
      cp_async_16(a + ld_smem + i * kRowStep * BK, ok ? a_src + i * step + k0 : x, ok);
    }
#pragma unroll
    for (int i = 0; i < B_ITERS; ++i) {
      const bool ok = col_ok && ((b_rows_ok >> i) & 1u);
      cp_async_16(b + ld_smem + i * kRowStep * BK, ok ? b_src + i * step + k0 : w, ok);
    }
  }
};

// ------------------------------------------------------------------------------------------ tiled
// Split-K across a thread-block cluster (sm_90): the kSplit CTAs of a cluster share one output
// tile; each has run its share of the k-tiles into `acc`, and here they add up in shared memory
// across the cluster (DSMEM). Every CTA writes its fp32 partial tile into its own ring (free after
// the main loop), the cluster meets, then CTA r sums rows [r, r + 1) * BM / kSplit of the tile over
// all kSplit partials (always in rank order, so the result does not depend on timing), applies the
// epilogue and stores; a last meeting keeps every CTA's shared memory alive until all have read it.
template <typename Cfg, int kSplit, typename T, typename Acc>
__device__ __forceinline__ void split_k_cluster_epilogue(const Problem& p, const Acc& acc, float* partial, int m0,
                                                         int n0, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  constexpr int BM = Cfg::BM, BN = Cfg::BN, MI = Cfg::MI, NI = Cfg::NI, THREADS = Cfg::THREADS;
  constexpr int kStride = BN + 4;  // a row's floats, padded: the quads of a warp hit other banks
  static_assert(BM * kStride * 4 <= Cfg::SMEM_BYTES, "split-K: the partial tile must fit the ring");
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / Cfg::WARPS_N, wn = warp % Cfg::WARPS_N;
  __syncthreads();  // every warp is done with the ring
#pragma unroll
  for (int i = 0; i < MI; ++i)
#pragma unroll
    for (int j = 0; j < NI; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = wm * Cfg::WM + i * 16 + lane / 4 + h * 8, col = wn * Cfg::WN + j * 8 + (lane % 4) * 2;
        *reinterpret_cast<float2*>(partial + row * kStride + col) = make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
      }
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();  // (release/acquire: every CTA's partial is visible to the cluster)
  const float* partials[kSplit];
#pragma unroll
  for (int s = 0; s < kSplit; ++s) partials[s] = cluster.map_shared_rank(partial, s);
  const int row_begin = BM * rank / kSplit, row_end = BM * (rank + 1) / kSplit;
  T* out = static_cast<T*>(p.out);
  const T* bias = static_cast<const T*>(p.bias);
  with_gelu_form(p.act, [&](auto form) {
    for (int e = tid; e < (row_end - row_begin) * (BN / 2); e += THREADS) {
      const int row = row_begin + e / (BN / 2), col = (e % (BN / 2)) * 2;
      float v0 = 0.f, v1 = 0.f;
#pragma unroll
      for (int s = 0; s < kSplit; ++s) {
        const float2 v = *reinterpret_cast<const float2*>(partials[s] + row * kStride + col);
        v0 += v.x;
        v1 += v.y;
      }
      store_pair<decltype(form)::value>(out, bias, m0 + row, n0 + col, p.m, p.n, v0, v1);
    }
  });
  cluster.sync();  // no CTA leaves while another still reads its partial
#else
  __trap();  // launched only where the kernel's sm_90 code is loaded (launch_tiled_split)
#endif
}

// kSplit > 1: split-K over a cluster of kSplit CTAs (sm_90; split_k_cluster_epilogue); the grid is
// kSplit CTAs per output tile, consecutive blocks one cluster. kSplit = 1: one CTA per tile.
template <typename T, typename Cfg, int kSplit = 1>
__global__ void __launch_bounds__(Cfg::THREADS, Cfg::MIN_BLOCKS) gelu_linear_tiled_kernel(Problem p) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, STAGES = Cfg::STAGES, THREADS = Cfg::THREADS;
  constexpr int MI = Cfg::MI, NI = Cfg::NI;
  using Tile = SwizzledTile<BK>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* s_a = reinterpret_cast<T*>(smem_raw);  // [STAGES][BM][BK]
  T* s_b = s_a + STAGES * BM * BK;          // [STAGES][BN][BK]

  const int m = p.m, n = p.n, k = p.k;
  int m0, n0;
  const int rank = kSplit == 1 ? 0 : int(blockIdx.x % kSplit);
  grouped_tile_origin<BM, BN>(m, n, kSplit == 1 ? int(blockIdx.x) : int(blockIdx.x / kSplit), m0, n0);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / Cfg::WARPS_N, wn = warp % Cfg::WARPS_N;

  // This CTA's k-tiles: all of them, or under split-K its rank's share (shares differ by at most one).
  const int k_tiles_all = (k + BK - 1) / BK;
  const int kt_first = kSplit == 1 ? 0 : k_tiles_all * rank / kSplit;
  const int k_tiles = kSplit == 1 ? k_tiles_all : k_tiles_all * (rank + 1) / kSplit - kt_first;
  const TileLoader<T, BM, BN, BK, THREADS> loader(p, m0, n0, tid);
  auto load_stage = [&](int stage, int kt) {
    loader.load(s_a + stage * BM * BK, s_b + stage * BN * BK, (kt_first + kt) * BK);
  };

  float acc[MI][NI][4];
  zero_accumulators(acc);

  cp_async_prologue<STAGES>(k_tiles, load_stage);
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_next_tile<STAGES>(kt, k_tiles, load_stage);
    const T* a = s_a + (kt % STAGES) * BM * BK;
    const T* b = s_b + (kt % STAGES) * BN * BK;
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      std::uint32_t af[MI][4], bf[NI][2];
#pragma unroll
      for (int i = 0; i < MI; ++i) {
        // matrices: (rows 0-7 | 8-15) x (k 0-7 | 8-15), in the a[0..3] order mma expects
        const int row = wm * Cfg::WM + i * 16 + lane % 16;
        ldmatrix_x4(af[i], a + Tile::offset(row, kk * 16 + (lane / 16) * 8));
      }
#pragma unroll
      for (int j = 0; j < NI; j += 2) {
        // matrices: (n-block j, k 0-7), (j, k 8-15), (j+1, k 0-7), (j+1, k 8-15)
        const int row = wn * Cfg::WN + j * 8 + lane % 8 + (lane / 16) * 8;
        std::uint32_t r[4];
        ldmatrix_x4(r, b + Tile::offset(row, kk * 16 + ((lane / 8) % 2) * 8));
        bf[j][0] = r[0];
        bf[j][1] = r[1];
        bf[j + 1][0] = r[2];
        bf[j + 1][1] = r[3];
      }
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) mma_m16n8k16<T>(acc[i][j], af[i], bf[j]);
    }
  }
  cp_async_wait<0>();
  if constexpr (kSplit > 1) {
    split_k_cluster_epilogue<Cfg, kSplit, T>(p, acc, reinterpret_cast<float*>(smem_raw), m0, n0, rank);
    return;
  }

  T* out = static_cast<T*>(p.out);
  const T* bias = static_cast<const T*>(p.bias);
  with_gelu_form(p.act, [&](auto form) {
#pragma unroll
    for (int i = 0; i < MI; ++i) {
      const int row = m0 + wm * Cfg::WM + i * 16 + lane / 4;
#pragma unroll
      for (int j = 0; j < NI; ++j) {
        const int col = n0 + wn * Cfg::WN + j * 8 + (lane % 4) * 2;
        store_pair<decltype(form)::value>(out, bias, row, col, m, n, acc[i][j][0], acc[i][j][1]);
        store_pair<decltype(form)::value>(out, bias, row + 8, col, m, n, acc[i][j][2], acc[i][j][3]);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------- small_m
// The tensor maps of x ([m][k], boxes of ROWS_X x 64) and W ([n][k], boxes of ROWS_W x 64) when
// TMA fills the small-M kernel's ring (SmallMCopy::kTensorMaps): a __grid_constant__ kernel
// parameter (gelu_linear_small_m_tma_kernel), so the copies read them from parameter space.
struct SmallMMaps {
  CUtensorMap x, w;
};

// kRows x 64 blocks side by side along K, each 128-byte swizzled as one TMA box lands it
// (chunk c of row r at c ^ (r % 8) within 1024-byte aligned 8-row atoms).
template <int kRows>
struct BlockedSwizzledTile {
  __device__ __forceinline__ static int offset(int row, int col) {
    return (col >> 6) * kRows * 64 + SwizzledTile<64>::offset(row, col & 63);
  }
};

// Thread 0's copies of one stage when TMA fills the ring: the byte count (whole boxes: the
// zero-filled parts count too), then one box of x and one of W per 64 columns from k0.
template <typename T, typename Cfg>
__device__ __forceinline__ void small_m_issue_tma_stage(const SmallMMaps& maps, std::uint64_t* full, T* xs, T* ws,
                                                        int k0, int n0) {
  constexpr std::uint32_t kBytes = (Cfg::ROWS_X + Cfg::ROWS_W) * Cfg::BK * sizeof(T);
  mbarrier_arrive_expect_tx(full, kBytes);
#pragma unroll
  for (int b = 0; b < Cfg::BK / 64; ++b) {
    tma_load_4d(xs + b * Cfg::ROWS_X * 64, &maps.x, full, k0 + b * 64, 0, 0, 0);
    tma_load_4d(ws + b * Cfg::ROWS_W * 64, &maps.w, full, k0 + b * 64, n0, 0, 0);
  }
}

// The weight-streaming kernel's body; `maps` is read only when TMA fills the ring (Cfg::kCopy).
template <typename T, typename Cfg>
__device__ __forceinline__ void small_m_body(const Problem& p, const SmallMMaps* maps) {
  constexpr int BK = Cfg::BK, STAGES = Cfg::STAGES, THREADS = Cfg::THREADS;
  constexpr int MT = Cfg::MT, NT = Cfg::NT, ROWS_X = Cfg::ROWS_X, ROWS_W = Cfg::ROWS_W;
  constexpr int CHUNKS = BK / 8;
  constexpr bool kTma = Cfg::kCopy == SmallMCopy::kTensorMaps;
  using XTile = std::conditional_t<kTma, BlockedSwizzledTile<ROWS_X>, SwizzledTile<BK>>;
  using WTile = std::conditional_t<kTma, BlockedSwizzledTile<ROWS_W>, SwizzledTile<BK>>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  unsigned char* smem = smem_raw;
  if constexpr (kTma) {  // boxes start on 1024-byte atoms (SMEM_BYTES has the slack)
    smem = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t(1023));
  }
  __shared__ std::uint64_t stage_full[kTma ? STAGES : 1];  // TMA: stage s has landed
  T* s_x = reinterpret_cast<T*>(smem);  // [STAGES][ROWS_X][BK]
  T* s_w = s_x + STAGES * ROWS_X * BK;  // [STAGES][ROWS_W][BK]

  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w = static_cast<const T*>(p.w);
  const int m = p.m, n = p.n, k = p.k;
  const int n0 = blockIdx.x * ROWS_W;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  // Rows past M (x) and past N (W) are never copied: zero them once in every slot and they stay
  // zero, so padding costs neither bandwidth nor per-stage work.
  const int rows_x = min(m, ROWS_X), rows_w = min(n - n0, ROWS_W);
  if (p.prefetch_w_l2) pdl::prefetch_l2(w + std::int64_t(n0) * k, std::int64_t(rows_w) * k * sizeof(T), tid, THREADS);
  pdl::wait_for_prior_grid();  // launched as a dependent (pdl::launch): x is ready after this
  pdl::allow_dependents();
  if constexpr (!kTma) {  // (TMA zero-fills rows past M and N itself)
    constexpr int kSlotChunks = (ROWS_X + ROWS_W) * CHUNKS;
    for (int i = tid; i < STAGES * kSlotChunks; i += THREADS) {
      const int s = i / kSlotChunks, c = i % kSlotChunks;
      const int r = c / CHUNKS;
      const bool pad = r < ROWS_X ? r >= rows_x : (r - ROWS_X) >= rows_w;
      if (pad) {
        T* base = r < ROWS_X ? s_x + s * ROWS_X * BK + r * BK : s_w + s * ROWS_W * BK + (r - ROWS_X) * BK;
        *reinterpret_cast<int4*>(base + (c % CHUNKS) * 8) = make_int4(0, 0, 0, 0);
      }
    }
  }

  auto load_stage = [&](int stage, int kt) {
    const int k0 = kt * BK;
    T* xs = s_x + stage * ROWS_X * BK;
    T* ws = s_w + stage * ROWS_W * BK;
    for (int i = tid; i < rows_w * CHUNKS; i += THREADS) {
      const int r = i / CHUNKS, col = (i % CHUNKS) * 8;
      const bool ok = k0 + col < k;
      cp_async_16(ws + WTile::offset(r, col), ok ? w + std::int64_t(n0 + r) * k + k0 + col : w, ok);
    }
    for (int i = tid; i < rows_x * CHUNKS; i += THREADS) {
      const int r = i / CHUNKS, col = (i % CHUNKS) * 8;
      const bool ok = k0 + col < k;
      cp_async_16(xs + XTile::offset(r, col), ok ? x + std::int64_t(r) * k + k0 + col : x, ok);
    }
  };

  float acc[MT][NT][4];
  zero_accumulators(acc);

  const int k_tiles = (k + BK - 1) / BK;
  if constexpr (kTma) {
    if (tid == 0) {
      for (int s = 0; s < STAGES; ++s) mbarrier_init(&stage_full[s], 1);
      fence_mbarrier_init();
      for (int s = 0; s < STAGES - 1 && s < k_tiles; ++s) {
        small_m_issue_tma_stage<T, Cfg>(*maps, &stage_full[s],
                                        s_x + s * ROWS_X * BK, s_w + s * ROWS_W * BK, s * BK, n0);
      }
    }
    __syncthreads();  // the barriers are initialized before anyone waits on them
  } else {
    cp_async_prologue<STAGES>(k_tiles, load_stage);
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    if constexpr (kTma) {
      // Tile kt-1's slot is refilled (with tile kt + STAGES - 1) once every warp is done with it.
      if (kt > 0) __syncthreads();
      const int next = kt + STAGES - 1, slot = next % STAGES;
      if (tid == 0 && next < k_tiles) {
        small_m_issue_tma_stage<T, Cfg>(*maps, &stage_full[slot],
                                        s_x + slot * ROWS_X * BK, s_w + slot * ROWS_W * BK, next * BK, n0);
      }
      mbarrier_wait(&stage_full[kt % STAGES], std::uint32_t((kt / STAGES) & 1));
    } else {
      cp_async_next_tile<STAGES>(kt, k_tiles, load_stage);
    }
    const T* xs = s_x + (kt % STAGES) * ROWS_X * BK;
    const T* ws = s_w + (kt % STAGES) * ROWS_W * BK;
    const int kw = warp * Cfg::WARP_K;  // this warp's quarter of the stage
#pragma unroll
    for (int kk = 0; kk < Cfg::WARP_K / 16; kk += 2) {  // two k16 steps per B load
      std::uint32_t bf[NT][2][2];  // [n tile][k step][reg]
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        // matrices: W rows of n tile j at k chunks +0, +1, +2, +3 -> (step kk: r0, r1), (kk+1: r2, r3)
        std::uint32_t r[4];
        ldmatrix_x4(r, ws + WTile::offset(j * 8 + lane % 8, kw + kk * 16 + (lane / 8) * 8));
        bf[j][0][0] = r[0];
        bf[j][0][1] = r[1];
        bf[j][1][0] = r[2];
        bf[j][1][1] = r[3];
      }
#pragma unroll
      for (int step = 0; step < 2; ++step) {
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          std::uint32_t af[4];
          ldmatrix_x4(af, xs + XTile::offset(i * 16 + lane % 16, kw + (kk + step) * 16 + (lane / 16) * 8));
#pragma unroll
          for (int j = 0; j < NT; ++j) mma_m16n8k16<T>(acc[i][j], af, bf[j][step]);
        }
      }
    }
  }
  if constexpr (!kTma) cp_async_wait<0>();  // (TMA: every stage was waited for in the loop)
  __syncthreads();  // the ring is reused below for the cross-warp reduction

  // red[warp][row][col], fp32: each warp's partial sum over its K quarter.
  float* red = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = i * 16 + lane / 4 + h * 8, col = j * 8 + (lane % 4) * 2;
        float* dst = red + (warp * ROWS_X + row) * ROWS_W + col;
        dst[0] = acc[i][j][2 * h];
        dst[1] = acc[i][j][2 * h + 1];
      }
  __syncthreads();

  T* out = static_cast<T*>(p.out);
  const T* bias = static_cast<const T*>(p.bias);
  with_gelu_form(p.act, [&](auto form) {
    for (int i = tid; i < rows_x * (ROWS_W / 2); i += THREADS) {
      const int row = i / (ROWS_W / 2), col = (i % (ROWS_W / 2)) * 2;
      float v0 = 0.f, v1 = 0.f;
#pragma unroll
      for (int wi = 0; wi < Cfg::WARPS; ++wi) {
        const float* src = red + (wi * ROWS_X + row) * ROWS_W + col;
        v0 += src[0];
        v1 += src[1];
      }
      store_pair<decltype(form)::value>(out, bias, row, n0 + col, m, n, v0, v1);
    }
  });
}

// The ring filled by 16-byte copies from every thread (every GPU from sm_75 on).
template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::THREADS) gelu_linear_small_m_kernel(Problem p) {
  static_assert(Cfg::kCopy == SmallMCopy::kThreadCopies, "small_m: TMA-filled tiles take the _tma kernel");
  small_m_body<T, Cfg>(p, nullptr);
}

// The ring filled by TMA (sm_90; on other targets the copies compile to nothing, so the launcher
// takes this kernel only where its sm_90 code is loaded: detail::kernel_has_sm90a_code).
template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::THREADS)
    gelu_linear_small_m_tma_kernel(const __grid_constant__ Problem p, const __grid_constant__ SmallMMaps maps) {
  static_assert(Cfg::kCopy == SmallMCopy::kTensorMaps, "small_m: thread-copy tiles take the plain kernel");
#if FK_TMA_AVAILABLE
  small_m_body<T, Cfg>(p, &maps);
#endif
}

// Launchers (one translation unit each instantiates its share of the templates).
template <typename T, typename Cfg>
void launch_tiled(const Problem& p, cudaStream_t stream);
// launch_small_m: gelu_linear_config.h.
// launch_small_m_tma: gelu_linear_config.h.
// A [rows][k] row-major matrix as a TMA map with boxes of [box_rows][64] (the other two of the
// four dimensions are 1); false when TMA cannot describe it (gelu_linear_sm90_ws.cu).
bool make_matrix_map(CUtensorMap* map, const void* ptr, DType dtype, int rows, int k, int box_rows);
// Hopper warp-specialized persistent kernel (gelu_linear_sm90_ws.cu): the variant `backend` names,
// or (kAuto) the one chosen for the shape; false when this build has no sm_90a code for it or TMA
// cannot describe x or W.
template <typename T>
bool launch_wgmma_ws(const Problem& p, int sm_count, cudaStream_t stream, GeluLinearBackend backend);

}  // namespace flashkernel::gelu_linear_detail
