// The portable FlashAttention-2 style forward kernel: mma.sync + ldmatrix + cp.async, so it runs
// on every GPU from sm_80 on (Ampere, Ada, Hopper). Included by one .cu per head_dim, which
// instantiates only the tile configurations that head_dim uses.
//
// One thread block owns kBlockM query rows of one (batch, head): its Q tile is copied to shared
// memory once; K and V tiles of kBlockN keys stream through a kStages-deep cp.async ring. Each of
// the kWarps warps owns kBlockM / kWarps contiguous query rows (kMTiles tiles of 16 rows), so the
// softmax statistics of a row live in the 4 lanes of one quad and never cross warps:
//   S = Q K^T       (mma, fp32 accumulators in registers)
//   online softmax  (running max m and sum l per row in fp32, exp2 with scale*log2(e) folded
//                    into one FFMA per score; the O rescale is skipped while no row max moves)
//   O += P V        (P re-packed from the S accumulators to 16-bit A fragments, no shared memory)
// Masks are applied only on the key tiles that need them (the causal diagonal and the Nk tail);
// causal blocks stop at their diagonal and are launched heaviest first.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "attention/attention_params.h"
#include "common/attention_tile.cuh"
#include "common/cp_async.cuh"
#include "common/cuda_check.h"
#include "common/mma_sm80.cuh"

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
  // Q fragments of all k-steps stay in registers when they are few (d=64); at d=128 they would
  // cost 64 registers per thread, so they are re-read from shared memory each key tile instead.
  static constexpr bool kQInRegisters = kMTiles * (kHeadDim / 16) * 4 <= 32;
  static constexpr int kSmemBytes = (kBlockM + 2 * kStages * kBlockN) * kHeadDim * 2;
};

// Copies `kRows` rows of kHeadDim elements (row r at src + r * row_stride) into a swizzled shared
// tile; rows at or past `valid_rows` are zero-filled (a NaN there would survive P = 0 as 0 * NaN).
template <typename T, int kRows, int kHeadDim, int kThreads>
__device__ __forceinline__ void load_tile(T* smem, const T* src, std::int64_t row_stride, int valid_rows) {
  using Swz = SwizzledTile<kHeadDim>;
  constexpr int kChunks = kHeadDim / 8;
  constexpr int kTotal = kRows * kChunks;
  static_assert(kTotal % kThreads == 0, "every thread copies the same number of chunks");
#pragma unroll
  for (int i = threadIdx.x; i < kTotal; i += kThreads) {
    const int row = i / kChunks;
    const int col = (i % kChunks) * 8;
    const bool valid = row < valid_rows;
    // An out-of-range row still needs a legal address; nothing is read from it (src size 0).
    const T* g = valid ? src + row * row_stride + col : src;
    cp_async_16(smem + Swz::offset(row, col), g, valid);
  }
}

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads) attention_fwd_kernel(const Params p) {
  constexpr int D = Cfg::kHeadDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN, kStages = Cfg::kStages;
  constexpr int MT = Cfg::kMTiles;
  constexpr int kNTiles = BN / 8;   // 8-column C fragments of S per 16-row tile
  constexpr int kDTiles = D / 8;    // 8-column C fragments of O per 16-row tile
  using Swz = SwizzledTile<D>;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + BM * D;
  T* sV = sK + kStages * BN * D;

  const AttentionShape& sh = p.shape;
  // Reversed so the causal blocks with the most key tiles start first (less tail imbalance).
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int head_kv = head / int(sh.heads_q / sh.heads_kv);
  const int seq_q = int(sh.seq_q), seq_k = int(sh.seq_k);
  const int m0 = m_block * BM;
  // Causal: query i sees keys j <= i + diag (bottom-right aligned).
  const int diag = seq_k - seq_q;

  const T* q = static_cast<const T*>(p.q) + batch * sh.q_stride[0] + head * sh.q_stride[1] +
               std::int64_t(m0) * sh.q_stride[2];
  const T* k = static_cast<const T*>(p.k) + batch * sh.k_stride[0] + head_kv * sh.k_stride[1];
  const T* v = static_cast<const T*>(p.v) + batch * sh.v_stride[0] + head_kv * sh.v_stride[1];

  int n_end = seq_k;
  if (p.causal) n_end = min(seq_k, m0 + BM + diag);  // last row of the block sees keys < this
  const int n_blocks = n_end > 0 ? (n_end + BN - 1) / BN : 0;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_row0 = warp * Cfg::kRowsPerWarp;

  // ---- prologue: Q and the first kStages-1 key tiles in flight, one commit group per key tile.
  load_tile<T, BM, D, Cfg::kThreads>(sQ, q, sh.q_stride[2], seq_q - m0);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_blocks) {
      const int rows = seq_k - s * BN;
      load_tile<T, BN, D, Cfg::kThreads>(sK + s * BN * D, k + std::int64_t(s) * BN * sh.k_stride[2], sh.k_stride[2], rows);
      load_tile<T, BN, D, Cfg::kThreads>(sV + s * BN * D, v + std::int64_t(s) * BN * sh.v_stride[2], sh.v_stride[2], rows);
    }
    cp_async_commit();
  }

  float acc_o[MT][kDTiles][4];
#pragma unroll
  for (int mi = 0; mi < MT; ++mi)
#pragma unroll
    for (int j = 0; j < kDTiles; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mi][j][e] = 0.f;
  RowStats<MT> stats;
  const SoftmaxScale sc(p.scale);

  std::uint32_t q_frag[Cfg::kQInRegisters ? MT : 1][Cfg::kQInRegisters ? D / 16 : 1][4];
  if constexpr (Cfg::kQInRegisters) {
    cp_async_wait<kStages - 2>();  // the first group (Q with key tile 0) has landed
    __syncthreads();
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(q_frag[mi][kk], sQ + Swz::offset(warp_row0 + mi * 16 + (lane % 16), kk * 16 + (lane / 16) * 8));
  }

  for (int j = 0; j < n_blocks; ++j) {
    // Refill the stage read in iteration j-1 with key tile j+kStages-1; the barrier makes sure
    // every warp has finished reading it.
    __syncthreads();
    {
      const int jn = j + kStages - 1;
      if (jn < n_blocks) {
        const int st = jn % kStages;
        const int rows = seq_k - jn * BN;
        load_tile<T, BN, D, Cfg::kThreads>(sK + st * BN * D, k + std::int64_t(jn) * BN * sh.k_stride[2], sh.k_stride[2], rows);
        load_tile<T, BN, D, Cfg::kThreads>(sV + st * BN * D, v + std::int64_t(jn) * BN * sh.v_stride[2], sh.v_stride[2], rows);
      }
      cp_async_commit();  // an empty group keeps the wait count below uniform
    }
    cp_async_wait<kStages - 1>();  // key tile j (and Q) have landed for this thread...
    __syncthreads();               // ...and for every thread

    const T* sKs = sK + (j % kStages) * BN * D;
    const T* sVs = sV + (j % kStages) * BN * D;
    const int n0 = j * BN;

    // ---- S = Q K^T
    float acc_s[MT][kNTiles][4];
#pragma unroll
    for (int mi = 0; mi < MT; ++mi)
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_s[mi][nt][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      std::uint32_t a[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) {
        if constexpr (Cfg::kQInRegisters) {
#pragma unroll
          for (int e = 0; e < 4; ++e) a[mi][e] = q_frag[mi][kk][e];
        } else {
          ldmatrix_x4(a[mi], sQ + Swz::offset(warp_row0 + mi * 16 + (lane % 16), kk * 16 + (lane / 16) * 8));
        }
      }
#pragma unroll
      for (int nb = 0; nb < BN / 16; ++nb) {
        std::uint32_t b[4];
        ldmatrix_x4(b, sKs + Swz::offset(nb * 16 + (lane / 16) * 8 + (lane % 8), kk * 16 + ((lane / 8) % 2) * 8));
        const std::uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          mma_m16n8k16<T>(acc_s[mi][2 * nb], a[mi], b0);
          mma_m16n8k16<T>(acc_s[mi][2 * nb + 1], a[mi], b1);
        }
      }
    }

    // ---- mask where needed (diagonal and tail tiles only), then the online softmax
    if (tile_needs_mask<BN>(n0, m0, seq_k, p.causal, diag)) {
      mask_tile(acc_s, m0 + warp_row0, n0, seq_k, p.causal, diag, sc.masked);
    }
    softmax_update(acc_s, acc_o, stats, sc);

    // ---- O += P V
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      std::uint32_t a[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) pack_rows_to_a<T>(a[mi], acc_s[mi][2 * kk], acc_s[mi][2 * kk + 1]);
#pragma unroll
      for (int dn = 0; dn < D / 16; ++dn) {
        std::uint32_t b[4];
        ldmatrix_x4_trans(b, sVs + Swz::offset(kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8, dn * 16 + (lane / 16) * 8));
        const std::uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          mma_m16n8k16<T>(acc_o[mi][2 * dn], a[mi], b0);
          mma_m16n8k16<T>(acc_o[mi][2 * dn + 1], a[mi], b1);
        }
      }
    }
  }
  cp_async_wait<0>();  // nothing may be left in flight into shared memory when the block exits

  // ---- epilogue: O / l, LSE
  T* out = static_cast<T*>(p.out) + batch * sh.o_stride[0] + head * sh.o_stride[1];
  float* lse = p.lse ? p.lse + (std::int64_t(batch) * sh.heads_q + head) * seq_q : nullptr;
  store_output<T>(acc_o, stats, out, sh.o_stride[2], lse, m0 + warp_row0, seq_q);
}

template <typename T, typename Cfg>
void launch(const Params& p, cudaStream_t stream) {
  constexpr int kSmem = Cfg::kSmemBytes;
  auto kernel = attention_fwd_kernel<T, Cfg>;
  // Above 48 KiB a kernel must opt in to dynamic shared memory (once per kernel and device is
  // enough, but the call is cheap next to a launch).
  if constexpr (kSmem > 48 * 1024) {
    FK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  }
  const dim3 grid(unsigned((p.shape.seq_q + Cfg::kBlockM - 1) / Cfg::kBlockM), unsigned(p.shape.heads_q),
                  unsigned(p.shape.batch));
  kernel<<<grid, Cfg::kThreads, kSmem, stream>>>(p);
  FK_CHECK_LAUNCH();
}

}  // namespace flashkernel::attention::sm80
