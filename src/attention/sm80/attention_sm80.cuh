// The portable FlashAttention-2 style forward kernel: mma.sync + ldmatrix + cp.async, so it runs
// on every GPU from sm_80 on (Ampere, Ada, Hopper), and in fp16 on sm_75 (Turing), where the
// common/ wrappers turn cp.async into synchronous copies and each mma into two m16n8k8. Included by one .cu per head_dim, which
// instantiates only the tile configurations that head_dim uses.
//
// One thread block owns kBlockM query rows of one (batch, head): its Q tile is copied to shared
// memory once; K and V tiles of kBlockN keys stream through a kStages-deep cp.async ring. Each of
// the kWarps warps owns kBlockM / kWarps contiguous query rows (kMTiles tiles of 16 rows), so the
// softmax statistics of a row live in the 4 lanes of one quad and never cross warps:
//   S = Q K^T       (mma, fp32 accumulators in registers)
//   online softmax  (running max m and sum l per row in fp32, exp2 with scale*log2(e) folded
//                    into one FFMA per score, a negative scale's sign folded into Q)
//   O += P V        (P re-packed from the S accumulators to 16-bit A fragments, no shared memory)
// Masks are applied only on the key tiles that need them (the causal diagonal and the Nk tail);
// causal blocks stop at their diagonal and are launched heaviest first. On Hopper the kernel is
// issue- and latency-bound, not memory-bound (2 warps per scheduler at 255 registers), so its
// addressing is precomputed per thread: shared offsets of ldmatrix reads and cp.async copies are
// one register plus constants.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "attention/attention_params.h"
#include "attention/sm80/attention_sm80_config.h"
#include "common/attention_tile.cuh"
#include "common/cp_async.cuh"
#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "common/launch.h"
#include "common/mma_sm80.cuh"

namespace flashkernel::attention::sm80 {

// TileConfig and the configurations of each head_dim: attention_sm80_config.h.

// Copies tiles of `kRows` rows of kValidElems elements (row r at src + r * row_stride) into
// swizzled shared memory rows of kHeadDim elements (kValidElems < kHeadDim: the padding chunks are
// neither copied nor read) with cp.async. kThreads is a multiple of the 16-byte chunks per row, so
// each thread always copies the same chunk column, of rows row0, row0 + kRowsPerPass, ...: where
// kRowsPerPass is a multiple of 8 its shared offsets are one precomputed value plus constants
// (the rows share the swizzle, row % 8), and its global address advances by one add per row.
template <typename T, int kRows, int kHeadDim, int kThreads, int kValidElems = kHeadDim>
struct TileCopy {
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kRowsPerPass = kThreads / kChunks;
  static constexpr int kPasses = kRows / kRowsPerPass;
  static constexpr bool kSharedSwizzle = kRowsPerPass % 8 == 0;
  static_assert(kThreads % kChunks == 0 && kRows % kRowsPerPass == 0, "every thread copies one chunk column");
  int row0;                // the thread's first row
  int col;                 // its chunk column, in elements
  std::uint32_t smem_off;  // byte offset of (row0, col) in the swizzled tile

  __device__ __forceinline__ TileCopy() {
    row0 = threadIdx.x / kChunks;
    col = (threadIdx.x % kChunks) * 8;
    smem_off = std::uint32_t(SwizzledTile<kHeadDim>::offset(row0, col) * sizeof(T));
  }

  // Byte offset of pass i's row in the tile.
  __device__ __forceinline__ std::uint32_t pass_offset(int i) const {
    if constexpr (kSharedSwizzle) {
      return smem_off + i * kRowsPerPass * kHeadDim * sizeof(T);
    } else {
      return std::uint32_t(SwizzledTile<kHeadDim>::offset(row0 + i * kRowsPerPass, col) * sizeof(T));
    }
  }

  // kCheckRows: rows at or past `valid_rows` are zero-filled (a NaN there would survive P = 0 as
  // 0 * NaN); only a tile that crosses the end of the sequence needs the check.
  template <bool kCheckRows>
  __device__ __forceinline__ void copy(std::uint32_t smem_tile, const T* src, std::int64_t row_stride,
                                       int valid_rows = kRows) const {
    if (kValidElems < kHeadDim && col >= kValidElems) return;  // a padding chunk
    const T* g = src + row0 * row_stride + col;
    const std::int64_t step = kRowsPerPass * row_stride;
#pragma unroll
    for (int i = 0; i < kPasses; ++i, g += step) {
      const bool valid = !kCheckRows || row0 + i * kRowsPerPass < valid_rows;
      // An out-of-range row still needs a legal address; nothing is read from it (src size 0).
      cp_async_16(smem_tile + pass_offset(i), valid ? g : src, valid);
    }
  }

  // Flips the sign of every element this thread copied (the sign bit of each 16-bit value), once
  // its copies have landed.
  __device__ __forceinline__ void negate_own(T* smem_tile) const {
    if (kValidElems < kHeadDim && col >= kValidElems) return;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      auto* chunk = reinterpret_cast<uint4*>(reinterpret_cast<unsigned char*>(smem_tile) + pass_offset(i));
      uint4 x = *chunk;
      x.x ^= 0x80008000u, x.y ^= 0x80008000u, x.z ^= 0x80008000u, x.w ^= 0x80008000u;
      *chunk = x;
    }
  }
};

// kExtended: the instance that also takes a sliding window, softcap and varlen batches
// (ExtendedParams) and any head_dim of the configurations; the plain instances
// (kExtended = false, head_dim 64/128) compile to the same code as before those existed.
template <bool kExtended>
using KernelParams = std::conditional_t<kExtended, ExtendedParams, Params>;

template <typename T, typename Cfg, bool kExtended = false>
__global__ void __launch_bounds__(Cfg::kThreads) attention_fwd_kernel(const KernelParams<kExtended> p) {
  constexpr int D = Cfg::kHeadDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN, kStages = Cfg::kStages;
  constexpr int DS = Cfg::kSmemRowElems;  // shared-memory row (D padded to whole swizzle rows)
  constexpr int MT = Cfg::kMTiles;
  constexpr int kNTiles = BN / 8;   // 8-column C fragments of S per 16-row tile
  constexpr int kDTiles = D / 8;    // 8-column C fragments of O per 16-row tile
  constexpr int kRowBytes = DS * int(sizeof(T));
  constexpr int kStageBytes = BN * kRowBytes;
  static_assert(kExtended || DS == D, "padded head dims run the extended instances only");
  using QCopy = TileCopy<T, BM, DS, Cfg::kThreads, D>;
  using KVCopy = TileCopy<T, BN, DS, Cfg::kThreads, D>;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  const std::uint32_t sQ_addr = smem_address(sQ);
  const std::uint32_t sK_addr = sQ_addr + BM * kRowBytes;
  const std::uint32_t sV_addr = sK_addr + kStages * kStageBytes;

  const AttentionShape& sh = p.shape;
  // Reversed so the causal blocks with the most key tiles start first (less tail imbalance).
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int head = blockIdx.y;
  const int batch = blockIdx.z;
  const int head_kv = head / int(sh.heads_q / sh.heads_kv);
  int seq_q = int(sh.seq_q), seq_k = int(sh.seq_k);
  const int m0 = m_block * BM;
  // Varlen: this sequence's rows start at q_row0 / k_row0 of the packed tensors (batch strides
  // unused); varlen_sequence clamps them into the tensors.
  int q_row0 = 0, k_row0 = 0;
  if constexpr (kExtended) {
    if (p.cu_seqlens_q != nullptr) {
      seq_q = varlen_sequence(p.cu_seqlens_q, batch, p.total_q, int(sh.seq_q), q_row0);
      seq_k = varlen_sequence(p.cu_seqlens_k, batch, p.total_k, int(sh.seq_k), k_row0);
      if (m0 >= seq_q) return;  // this sequence is shorter than the longest
    }
  }
  // Causal: query i sees keys j <= i + diag (bottom-right aligned).
  const int diag = seq_k - seq_q;

  const T* q = static_cast<const T*>(p.q) + batch * sh.q_stride[0] + head * sh.q_stride[1] +
               std::int64_t(q_row0 + m0) * sh.q_stride[2];
  const T* k = static_cast<const T*>(p.k) + batch * sh.k_stride[0] + head_kv * sh.k_stride[1] +
               std::int64_t(k_row0) * sh.k_stride[2];
  const T* v = static_cast<const T*>(p.v) + batch * sh.v_stride[0] + head_kv * sh.v_stride[1] +
               std::int64_t(k_row0) * sh.v_stride[2];

  int j_begin = 0;  // the first key tile any row of the block sees
  int n_blocks;     // one past the last
  if constexpr (kExtended) {
    n_blocks = window_key_tiles<BM, BN>(m0, seq_k, diag, p.window_left, p.window_right, j_begin);
  } else {
    const int n_end = p.causal ? min(seq_k, m0 + BM + diag) : seq_k;  // last row of the block sees keys < this
    n_blocks = n_end > 0 ? (n_end + BN - 1) / BN : 0;
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_row0 = warp * Cfg::kRowsPerWarp;

  // Key tile jn into ring stage jn % kStages; only the tile crossing seq_k checks its rows.
  const KVCopy kv_copy;
  auto load_kv = [&](int jn) {
    const int st = jn % kStages;
    const int rows = seq_k - jn * BN;
    const T* kt = k + std::int64_t(jn) * BN * sh.k_stride[2];
    const T* vt = v + std::int64_t(jn) * BN * sh.v_stride[2];
    if (rows >= BN) {
      kv_copy.template copy<false>(sK_addr + st * kStageBytes, kt, sh.k_stride[2]);
      kv_copy.template copy<false>(sV_addr + st * kStageBytes, vt, sh.v_stride[2]);
    } else {
      kv_copy.template copy<true>(sK_addr + st * kStageBytes, kt, sh.k_stride[2], rows);
      kv_copy.template copy<true>(sV_addr + st * kStageBytes, vt, sh.v_stride[2], rows);
    }
  };

  // ---- prologue: Q and the first kStages-1 key tiles in flight, one commit group per key tile.
  const QCopy q_copy;
  q_copy.template copy<true>(sQ_addr, q, sh.q_stride[2], seq_q - m0);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (j_begin + s < n_blocks) load_kv(j_begin + s);
    cp_async_commit();
  }
  // A negative scale: softmax(scale * S) = softmax(|scale| * (-Q) K^T). Negating this block's Q
  // once lets the softmax always take a row max; with the sign chosen per tile at run time, the
  // compiler emitted both the max and the min reductions. Each thread flips what it copied; the
  // barrier before the first read publishes it.
  const bool negate_q = p.scale < 0.f;
  if (negate_q) {
    cp_async_wait<kStages - 2>();  // the first group (Q with key tile 0) has landed
    q_copy.negate_own(sQ);
  }

  float acc_o[MT][kDTiles][4];
  zero_accumulators(acc_o);
  RowStats<MT> stats;
  // Softcap: the scores become softcap * tanh(|scale| * s / softcap), already scaled, so the
  // softmax takes them with scale 1.
  bool softcap = false;
  float cap = 0.f;
  if constexpr (kExtended) softcap = p.softcap > 0.f, cap = p.softcap;
  const SoftmaxScale sc(softcap ? 1.f : fabsf(p.scale));
  const float cap_in = softcap ? fabsf(p.scale) / cap : 0.f;

  // This lane's ldmatrix rows (see the fragment layouts in common/mma_sm80.cuh): Q (A operand)
  // and V^T read rows lane % 16 at chunk bit lane / 16, K (B operand) rows (lane / 16) * 8 +
  // lane % 8 at chunk bit (lane / 8) % 2. Each row start is a multiple of 8 plus lane % 8.
  const SwizzledChunkOffsets qv_cols(lane % 8, lane / 16), k_cols(lane % 8, (lane / 8) % 2);
  const std::uint32_t q_rows = sQ_addr + (warp_row0 + lane % 16) * kRowBytes;
  const std::uint32_t k_rows = ((lane / 16) * 8 + lane % 8) * kRowBytes;
  const std::uint32_t v_rows = (lane % 16) * kRowBytes;

  for (int j = j_begin; j < n_blocks; ++j) {
    // Refill the stage read in iteration j-1 with key tile j+kStages-1; the barrier makes sure
    // every warp has finished reading it.
    __syncthreads();
    if (j + kStages - 1 < n_blocks) load_kv(j + kStages - 1);
    cp_async_commit();             // an empty group keeps the wait count below uniform
    cp_async_wait<kStages - 1>();  // key tile j (and Q) have landed for this thread...
    __syncthreads();               // ...and for every thread

    const std::uint32_t stage = (j % kStages) * kStageBytes;
    const std::uint32_t sK_rows = sK_addr + stage + k_rows;
    const std::uint32_t sV_rows = sV_addr + stage + v_rows;
    const int n0 = j * BN;

    // ---- S = Q K^T (Q fragments re-read from shared memory: kept in registers they would cost
    // 32 (d=64) or 64 (d=128) registers per thread, which the 128-key tiles at d=64 need for S)
    float acc_s[MT][kNTiles][4];
    zero_accumulators(acc_s);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      std::uint32_t a[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) ldmatrix_x4(a[mi], q_rows + mi * 16 * kRowBytes + qv_cols(kk));
#pragma unroll
      for (int nb = 0; nb < BN / 16; ++nb) {
        std::uint32_t b[4];
        ldmatrix_x4(b, sK_rows + nb * 16 * kRowBytes + k_cols(kk));
        const std::uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
#pragma unroll
        for (int mi = 0; mi < MT; ++mi) {
          mma_m16n8k16<T>(acc_s[mi][2 * nb], a[mi], b0);
          mma_m16n8k16<T>(acc_s[mi][2 * nb + 1], a[mi], b1);
        }
      }
    }

    // ---- mask where needed (diagonal and tail tiles only), then the online softmax
    if constexpr (kExtended) {
      if (softcap) softcap_tile(acc_s, cap_in, cap);
      if (window_tile_needs_mask<BM, BN>(n0, m0, seq_k, diag, p.window_left, p.window_right)) {
        mask_tile_window(acc_s, m0 + warp_row0, n0, seq_k, diag, p.window_left, p.window_right, sc.masked);
      }
    } else if (tile_needs_mask<BN>(n0, m0, seq_k, p.causal, diag)) {
      mask_tile(acc_s, m0 + warp_row0, n0, seq_k, p.causal, diag, sc.masked);
    }
    float alpha[MT][2];
    // The rescale runs every tile, even where no row max moved (alpha = 1 exactly): skipping it
    // took a warp vote and a branch, which split the tile's code in two blocks that ptxas could
    // not interleave; unconditional, the multiplies fill the mma latency: +6-12% at d=64, even at
    // d=128 (DEVELOPMENT_LOG.md).
    softmax_tile(acc_s, stats, sc, alpha);
    rescale_output(acc_o, alpha);

    // ---- O += P V
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      std::uint32_t a[MT][4];
#pragma unroll
      for (int mi = 0; mi < MT; ++mi) pack_rows_to_a<T>(a[mi], acc_s[mi][2 * kk], acc_s[mi][2 * kk + 1]);
#pragma unroll
      for (int dn = 0; dn < D / 16; ++dn) {
        std::uint32_t b[4];
        ldmatrix_x4_trans(b, sV_rows + kk * 16 * kRowBytes + qv_cols(dn));
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
  T* out = static_cast<T*>(p.out) + batch * sh.o_stride[0] + head * sh.o_stride[1] +
           std::int64_t(q_row0) * sh.o_stride[2];
  float* lse = p.lse ? p.lse + (std::int64_t(batch) * sh.heads_q + head) * seq_q : nullptr;
  if constexpr (kExtended) {  // varlen: lse is [heads_q, total_q]
    if (p.lse != nullptr && p.cu_seqlens_q != nullptr) lse = p.lse + std::int64_t(head) * p.total_q + q_row0;
  }
  store_output<T>(acc_o, stats, out, sh.o_stride[2], lse, m0 + warp_row0, seq_q);
}

template <typename T, typename Cfg, bool kExtended = false>
void launch(const KernelParams<kExtended>& p, cudaStream_t stream) {
  constexpr int kSmem = Cfg::kSmemBytes;
  constexpr auto kernel = attention_fwd_kernel<T, Cfg, kExtended>;
  // Above 48 KiB a kernel must opt in to dynamic shared memory.
  if constexpr (kSmem > detail::kDefaultSmemBytes) detail::ensure_smem_opt_in<kernel>(kSmem);
  const dim3 grid(unsigned((p.shape.seq_q + Cfg::kBlockM - 1) / Cfg::kBlockM), unsigned(p.shape.heads_q),
                  unsigned(p.shape.batch));
  kernel<<<grid, Cfg::kThreads, kSmem, stream>>>(p);
  FK_CHECK_LAUNCH();
}

// One head dim's launch: its main configuration where the device's shared memory allows it, else
// the compact one, in both 16-bit dtypes. Each head dim's file instantiates its own, so they
// compile in parallel.
template <typename Main, typename Compact, bool kExtended = false>
void launch_half_dtypes(const KernelParams<kExtended>& p, DType dtype, cudaStream_t stream) {
  const bool main = uses_main_config<Main>(detail::current_smem_optin_bytes());
  dispatch_half_dtype(dtype, "flash_attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    main ? launch<T, Main, kExtended>(p, stream) : launch<T, Compact, kExtended>(p, stream);
  });
}

}  // namespace flashkernel::attention::sm80
