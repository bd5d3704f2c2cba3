// The Hopper (sm_90a) FlashAttention forward kernel: TMA loads completing on mbarriers, wgmma for
// both GEMMs, and warp specialization. Included by one .cu per head_dim.
//
// A work tile is kBlockM = 128 query rows of one (batch, head). Launches are persistent (one block
// per SM loops over work items; a Q `empty` barrier lets the next tile's loads start while this
// one's output is written); a causal item pairs a long and a short tile so all items cost the
// same. A block has three warpgroups:
//   warpgroup 0, the producer: one thread issues the TMA copies - Q once, then K and V tiles of
//     kBlockN keys into a kStages-deep ring - and gives most of its registers away (setmaxnreg);
//   warpgroups 1 and 2, the consumers: 64 query rows each. Per key tile:
//     S = Q K^T      wgmma, both operands in shared memory (K-major), fp32 accumulators
//     softmax        the online softmax of attention_tile.cuh (shared with the sm80 kernel)
//     O += P V       wgmma with P from registers (the S accumulators re-packed to 16 bits) and V
//                    in shared memory read MN-major (transposed B), no transpose copy
//   then release the stage to the producer through its `empty` mbarrier. The key tiles are
//   software pipelined: tile j's softmax overlaps tile j-1's P V on the tensor cores.
//   The epilogue writes O straight from the accumulators or (kStageOutput) stages it (16-bit) in
//   the last key tile's V buffer and writes it with TMA stores.
// K and V have separate `full` barriers so S = Q K^T starts before V has landed.
//
// In code: TileScheduler / VarlenTileScheduler (attention_sm90_scheduler.cuh: which work tiles a
// block runs), SharedTiles (the shared-memory layout and its barriers), produce() and consume()
// (the two roles: mainloop and epilogue), and the thin attention_sm90_kernel that composes them.
// Each restructuring left the SASS of every instantiation identical (scripts/sass_fingerprint.py).
//
// Shared memory (1024-byte aligned tiles in TMA's 128-byte swizzle, which is wgmma's): Q as
// kHeadDim / 64 column blocks of [128][64], and per stage K and V as column blocks of
// [kBlockN][64]. d=128, kBlockN=128, 3 stages: 32 + 3 * 64 = 224 KiB; d=64, 3 stages: 112 KiB.
// Tails need no code: TMA fills rows past Nq / Nk with zeros, and the mask removes the columns.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "attention/attention_params.h"
#include "attention/sm90/attention_sm90_config.h"
#include "attention/sm90/attention_sm90_scheduler.cuh"
#include "common/attention_tile.cuh"
#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "common/launch.h"
#include "common/tensor_map.h"
#include "common/tma_sm90.cuh"
#include "common/wgmma_sm90.cuh"

namespace flashkernel::attention::sm90 {

// Named barrier ids (0 is __syncthreads) of the output epilogue through shared memory: both
// consumer warpgroups are done with the V buffer O is staged in; then, per consumer (id + its
// index 0/1), its 128 threads have written their rows / its TMA store has read them.
enum NamedBarrier : int { kBothConsumersBarrier = 1, kConsumerBarrier = 2 };

// TileConfig and the configurations of each head_dim: attention_sm90_config.h.

// S (+)= (kNegate ? -1 : 1) * Q K^T for one consumer warpgroup: D / 16 k-steps, each inside one
// 64-column block of Q and K (+32 bytes a step). sQw is the warpgroup's 64 rows of Q's first
// column block; column blocks are kBlockM (Q) and kBlockN (K) rows of 128 bytes apart.
template <int D, int kBlockM, int kBlockN, bool kBf16, bool kNegate, typename T>
__device__ __forceinline__ void issue_qk_tile(float (&s_flat)[kBlockN / 2], const T* sQw, const T* sKs) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const int c = kk / 4, step_bytes = (kk % 4) * 32;
    const std::uint64_t da = wgmma_desc_advance(wgmma_desc_sw128(sQw + c * kBlockM * 64), step_bytes);
    const std::uint64_t db = wgmma_desc_advance(wgmma_desc_sw128(sKs + c * kBlockN * 64), step_bytes);
    wgmma_ss<kBlockN, kBf16, /*kTransB=*/false, kNegate>(s_flat, da, db, kk > 0);
  }
  wgmma_commit_group();
}

// Tile schedulers, Variant and KernelParams: attention_sm90_scheduler.cuh.

// ---------------------------------------------------------------- shared memory
// Q, the K/V ring and their mbarriers (layout: the file comment). K/V tile number g of a block,
// counted over all its work tiles, sits in ring slot Ring::slot(g).
template <typename T, typename Cfg>
struct SharedTiles {
  using Ring = RingStep<Cfg::kStages>;
  T* sQ;  // [kCB][BM][64]
  T* sK;  // [kStages][kCB][BN][64]
  T* sV;
  std::uint64_t *q_full, *q_empty, *k_full, *v_full, *kv_empty;

  __device__ __forceinline__ explicit SharedTiles(unsigned char* smem_raw) {
    const std::uintptr_t base = (reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t(1023);
    sQ = reinterpret_cast<T*>(base);
    sK = sQ + Cfg::kQElems;
    sV = sK + Cfg::kStages * Cfg::kKVElems;
    q_full = reinterpret_cast<std::uint64_t*>(sV + Cfg::kStages * Cfg::kKVElems);
    q_empty = q_full + 1;
    k_full = q_full + 2;
    v_full = k_full + Cfg::kStages;
    kv_empty = v_full + Cfg::kStages;
  }

  // Thread 0, before the roles split.
  __device__ __forceinline__ void init_barriers() const {
    mbarrier_init(q_full, 1);
    mbarrier_init(q_empty, 2 * 128);  // every consumer thread is done reading Q
    for (int s = 0; s < Cfg::kStages; ++s) {
      mbarrier_init(&k_full[s], 1);
      mbarrier_init(&v_full[s], 1);
      mbarrier_init(&kv_empty[s], 2 * 128);  // every consumer thread releases the stage
    }
    fence_mbarrier_init();
  }
};

// ---------------------------------------------------------------- producer
// Key tile `key0` of a paged work tile into ring slot s: BN / rows copies of `rows` keys (a page,
// or a BN-key part of a larger one) per column block, K then V, from the pool map (coordinates:
// column, row in the page, KV head, 2 x page id (+1 for V)). The producer warp's lane i reads the
// page id of copy i (one coalesced load); lane 0 issues. A copy past the sequence gets a page
// coordinate past the pool, which TMA fills with zeros: every copy lands, so a tile's byte count
// is the dense one.
template <typename T, typename Cfg, typename Scheduler>
__device__ __forceinline__ void load_paged_kv_tile(const SharedTiles<T, Cfg>& sm, const Scheduler& sched,
                                                   const VarlenWorkTile& w, int key0, int s, const CUtensorMap* tm_kv) {
  constexpr int BN = Cfg::kBlockN, kCB = Cfg::kColBlocks;
  constexpr std::uint32_t kKVBytes = Cfg::kKVElems * 2;
  const PagedParams& p = sched.p;
  const int lane = threadIdx.x % 32;
  const int rows = min(p.page_size, BN), copies = BN / rows;
  const int key = key0 + lane * rows;
  int page2 = 2 * p.num_pages;  // past the pool
  if (lane < copies && key < w.seq_k) {
    page2 = 2 * p.page_table[std::int64_t(w.batch) * p.table_stride + key / p.page_size];
  }
  const int in_page = key0 % p.page_size;  // 0 unless one page holds the whole tile
  for (int kv = 0; kv < 2; ++kv) {
    T* dst = (kv == 0 ? sm.sK : sm.sV) + s * Cfg::kKVElems;
    std::uint64_t* full = kv == 0 ? &sm.k_full[s] : &sm.v_full[s];
    if (lane == 0) mbarrier_arrive_expect_tx(full, kKVBytes);
    for (int r = 0; r < copies; ++r) {
      const int coord = __shfl_sync(0xffffffffu, page2, r) + kv;
      if (lane == 0) {
#pragma unroll
        for (int c = 0; c < kCB; ++c) {
          tma_load_4d(dst + c * BN * 64 + r * rows * 64, tm_kv, full, c * 64, in_page, w.head_kv, coord);
        }
      }
    }
  }
}

// One thread issues the TMA copies: per work tile Q, then K and V of each key tile into the ring
// (a paged producer: its whole warp, load_paged_kv_tile).
template <typename T, typename Cfg, typename Scheduler>
__device__ __forceinline__ void produce(const SharedTiles<T, Cfg>& sm, const Scheduler& sched, const CUtensorMap* tm_q,
                                        const CUtensorMap* tm_k, const CUtensorMap* tm_v, const CUtensorMap* tm_o) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN, kCB = Cfg::kColBlocks;
  constexpr std::uint32_t kKVBytes = Cfg::kKVElems * 2;
  using Ring = typename SharedTiles<T, Cfg>::Ring;
  if constexpr (Scheduler::kPaged) {
    if (threadIdx.x >= 32) return;
  } else {
    if (threadIdx.x != 0) return;
  }
  const bool issuer = threadIdx.x == 0;
  if (issuer) {
    prefetch_tensor_map(tm_q);
    prefetch_tensor_map(tm_k);
    prefetch_tensor_map(tm_v);
    if constexpr (Cfg::kStageOutput) prefetch_tensor_map(tm_o);
  }
  int g = 0;   // K/V tiles issued so far
  int it = 0;  // work tiles so far
  for (std::int64_t item = blockIdx.x; item < sched.n_items; item += gridDim.x)
    for (int half = 0; half < sched.tiles_per_item; ++half) {
      const auto w = sched.tile(item, half);
      if (!w.valid) continue;
      // Tensor coordinates of the tile's first query row and first key: varlen maps see the packed
      // tensors as one sequence (batch 1) of all rows.
      int q_row = w.m0, k_row0 = 0, batch = w.batch;
      if constexpr (Scheduler::kVarlen) {
        q_row += w.q_row0;
        k_row0 = w.k_row0;
        batch = 0;
      }
      mbarrier_wait(sm.q_empty, (it & 1) ^ 1);  // the consumers are done with the previous Q
      if (issuer) {
        mbarrier_arrive_expect_tx(sm.q_full, Cfg::kQElems * 2);
#pragma unroll
        for (int c = 0; c < kCB; ++c) tma_load_4d(sm.sQ + c * BM * 64, tm_q, sm.q_full, c * 64, q_row, w.head, batch);
      }
      for (int j = 0; j < w.n_blocks; ++j, ++g) {
        const int s = Ring::slot(g);
        mbarrier_wait(&sm.kv_empty[s], Ring::parity(g) ^ 1);  // the consumers are done with its last tile
        if constexpr (Scheduler::kPaged) {
          load_paged_kv_tile(sm, sched, w, (w.n_first + j) * BN, s, tm_k);
          continue;
        }
        mbarrier_arrive_expect_tx(&sm.k_full[s], kKVBytes);
#pragma unroll
        for (int c = 0; c < kCB; ++c) {
          tma_load_4d(sm.sK + s * Cfg::kKVElems + c * BN * 64, tm_k, &sm.k_full[s], c * 64,
                      k_row0 + (w.n_first + j) * BN, w.head_kv, batch);
        }
        mbarrier_arrive_expect_tx(&sm.v_full[s], kKVBytes);
#pragma unroll
        for (int c = 0; c < kCB; ++c) {
          tma_load_4d(sm.sV + s * Cfg::kKVElems + c * BN * 64, tm_v, &sm.v_full[s], c * 64,
                      k_row0 + (w.n_first + j) * BN, w.head_kv, batch);
        }
      }
      ++it;
    }
}

// Zeroes rows [first_row, BN) of a K/V tile in shared memory (kCB column blocks of [BN][64] 16-bit
// elements, 128 bytes a row: the 128-byte swizzle permutes 16-byte chunks only within a row, so
// whole rows are zeroed whatever the swizzle), spread over `threads` threads, this one `tid`.
template <int BN, int kCB, typename T>
__device__ __forceinline__ void zero_tail_rows(T* tile, int first_row, int tid, int threads) {
  const int chunks = (BN - first_row) * 8;  // 16-byte chunks of the tail rows in one column block
  for (int i = tid; i < kCB * chunks; i += threads) {
    unsigned char* block = reinterpret_cast<unsigned char*>(tile + (i / chunks) * BN * 64);
    *reinterpret_cast<uint4*>(block + first_row * 128 + (i % chunks) * 16) = make_uint4(0u, 0u, 0u, 0u);
  }
}

// ---------------------------------------------------------------- consumers
// Warpgroup cw (0 or 1) of the consumers: 64 query rows of each work tile, the mainloop over its
// key tiles, then the epilogue.
template <typename T, typename Cfg, typename Scheduler>
__device__ __forceinline__ void consume(const SharedTiles<T, Cfg>& sm, const Scheduler& sched, const Params& p,
                                        const CUtensorMap* tm_o, int cw) {
  // D: the head_dim S = Q K^T runs over; R: the padded width of O (and of P V), R = D but at
  // head_dim 32, 80 and 96 (TileConfig::kRowDim).
  constexpr int D = Cfg::kHeadDim, R = Cfg::kRowDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN, kCB = Cfg::kColBlocks;
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  using Ring = typename SharedTiles<T, Cfg>::Ring;
  const AttentionShape& sh = p.shape;
  static_assert(!(Scheduler::kVarlen && Cfg::kStageOutput), "varlen stores O from registers (TMA cannot clip rows "
                                                              "at a sequence's end inside the packed tensor)");
  int seq_q, seq_k, diag;  // of the whole batch; varlen: of the current tile's sequence
  if constexpr (!Scheduler::kVarlen) seq_q = sched.seq_q, seq_k = sched.seq_k, diag = sched.diag;
  // A negative scale is applied as |scale| to S = -(Q K^T), negated by the wgmma itself, so the
  // softmax always sees a positive scale (one max reduction per row, not a max or a min).
  const bool negate_scores = p.scale < 0.f;
  // Softcap (extended instances): the scores become softcap * tanh(|scale| * s / softcap), already
  // scaled, so the softmax takes them with scale 1 (the sign is in the scores, as above).
  bool softcap = false;
  float cap = 0.f;
  if constexpr (Scheduler::kExtended) softcap = sched.p.softcap > 0.f, cap = sched.p.softcap;
  const SoftmaxScale sc(softcap ? 1.f : fabsf(p.scale));
  const float cap_in = softcap ? fabsf(p.scale) / cap : 0.f;
  int g0 = 0;  // K/V tiles consumed before the current work tile
  int it = 0;  // work tiles so far
  for (std::int64_t item = blockIdx.x; item < sched.n_items; item += gridDim.x)
    for (int half = 0; half < sched.tiles_per_item; ++half) {
      const auto w = sched.tile(item, half);
      if (!w.valid) continue;
      if constexpr (Scheduler::kVarlen) seq_q = w.seq_q, seq_k = w.seq_k, diag = w.seq_k - w.seq_q;
      const int n_blocks = w.n_blocks;
      const int warp_row0 = w.m0 + cw * 64 + (threadIdx.x % 128) / 32 * 16;  // this warp's 16 rows
      float acc_o[1][R / 8][4];
#pragma unroll
      for (int j = 0; j < R / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc_o[0][j][e] = 0.f;
      RowStats<1> stats;
      float(&o_flat)[R / 2] = *reinterpret_cast<float(*)[R / 2]>(&acc_o[0][0][0]);

      auto issue_qk = [&](float(&s_flat)[BN / 2], const T* sKs) {
        const T* sQw = sm.sQ + cw * 64 * 64;
        if (negate_scores) {
          issue_qk_tile<D, BM, BN, kBf16, /*kNegate=*/true>(s_flat, sQw, sKs);
        } else {
          issue_qk_tile<D, BM, BN, kBf16, /*kNegate=*/false>(s_flat, sQw, sKs);
        }
      };
      // O += P V_j: BN / 16 k-steps of 16 keys = two 8-row swizzle groups (+2048 bytes a step); V
      // is read MN-major, its 64-column blocks BN * 128 bytes apart. One wgmma covers at most 128
      // output columns (two column blocks): head_dim 256 issues two per k-step, each into its half
      // of O's accumulators (columns 0-127 are o_flat[0, 64), the wgmma layout being by column).
      constexpr int kPvN = R < 128 ? R : 128;
      auto issue_pv = [&](const std::uint32_t(&a)[BN / 16][4], const T* sVs) {
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
          for (int h = 0; h < R / kPvN; ++h) {
            const T* sVh = sVs + h * (kPvN / 64) * BN * 64;
            const std::uint64_t db = wgmma_desc_advance(wgmma_desc_sw128(sVh, BN * 128), kk * 2048);
            wgmma_rs<kPvN, kBf16, /*kTransB=*/true>(*reinterpret_cast<float(*)[kPvN / 2]>(&o_flat[h * kPvN / 2]),
                                                     a[kk], db, true);
          }
        wgmma_commit_group();
      };
      // Softcap, mask (diagonal, window-edge and tail tiles only) and online softmax of the work
      // tile's key tile j.
      auto softmax = [&](float(&acc_s)[1][BN / 8][4], int j, float(&alpha)[1][2]) {
        const int n0 = (w.n_first + j) * BN;
        if constexpr (Scheduler::kExtended) {
          const int left = sched.p.window_left, right = sched.p.window_right;
          if (softcap) softcap_tile(acc_s, cap_in, cap);
          if (window_tile_needs_mask<64, BN>(n0, w.m0 + cw * 64, seq_k, diag, left, right)) {
            mask_tile_window(acc_s, warp_row0, n0, seq_k, diag, left, right, sc.masked);
          }
        } else if (tile_needs_mask<BN>(n0, w.m0 + cw * 64, seq_k, p.causal, diag)) {
          mask_tile(acc_s, warp_row0, n0, seq_k, p.causal, diag, sc.masked);
        }
        return softmax_tile(acc_s, stats, sc, alpha);
      };

      float acc_s[1][BN / 8][4];
      float(&s_flat)[BN / 2] = *reinterpret_cast<float(*)[BN / 2]>(&acc_s[0][0][0]);
      std::uint32_t a[BN / 16][4];  // P as 16-bit A fragments
      float alpha[1][2];
      auto pack_p = [&] {
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) pack_rows_to_a<T>(a[kk], acc_s[0][2 * kk], acc_s[0][2 * kk + 1]);
      };
      auto sK_of = [&](int j) { return sm.sK + Ring::slot(g0 + j) * Cfg::kKVElems; };
      auto sV_of = [&](int j) { return sm.sV + Ring::slot(g0 + j) * Cfg::kKVElems; };
      auto k_full_of = [&](int j) { return &sm.k_full[Ring::slot(g0 + j)]; };
      auto v_full_of = [&](int j) { return &sm.v_full[Ring::slot(g0 + j)]; };
      auto kv_empty_of = [&](int j) { return &sm.kv_empty[Ring::slot(g0 + j)]; };
      auto parity = [&](int j) { return Ring::parity(g0 + j); };

      mbarrier_wait(sm.q_full, it & 1);

      // With kStageOutput, the last key tile's stage is released after the epilogue, which stages
      // O in its V buffer.
      const bool via_smem = Cfg::kStageOutput && n_blocks > 0;
      auto release = [&](int j) {
        if (!via_smem || j != n_blocks - 1) mbarrier_arrive(kv_empty_of(j));
      };
      if (n_blocks > 0) {
        // Software pipeline across key tiles (FlashAttention-3's intra-warpgroup overlap): the
        // softmax of tile j runs on the CUDA cores while the tensor cores do P_{j-1} V_{j-1}.
        //   prologue:  S_0; softmax_0 (O is still 0: nothing to rescale)
        //   step j:    issue S_j and P_{j-1} V_{j-1}; wait S_j; softmax_j; wait PV; release stage
        //              j-1; rescale O by alpha_j; pack P_j
        //   epilogue:  P_last V_last
        mbarrier_wait(k_full_of(0), parity(0));
        wgmma_fence();
        issue_qk(s_flat, sK_of(0));
        wgmma_wait_group<0>();
        softmax(acc_s, 0, alpha);
        pack_p();
        for (int j = 1; j < n_blocks; ++j) {
          mbarrier_wait(k_full_of(j), parity(j));
          wgmma_fence();
          issue_qk(s_flat, sK_of(j));
          mbarrier_wait(v_full_of(j - 1), parity(j - 1));
          issue_pv(a, sV_of(j - 1));
          wgmma_wait_group<1>();  // S_j has landed; P_{j-1} V_{j-1} may still run
          const bool rescale = softmax(acc_s, j, alpha);
          wgmma_wait_group<0>();
          release(j - 1);
          if (rescale) rescale_output(acc_o, alpha);
          pack_p();
        }
        mbarrier_wait(v_full_of(n_blocks - 1), parity(n_blocks - 1));
        if constexpr (Scheduler::kVarlen) {
          // The last key tile may run past the sequence into the next one's rows (or unwritten rows
          // past the last sequence): their scores are masked, so P is 0 there, but 0 * a non-finite
          // V would still be NaN. Both warpgroups zero those V rows, then meet before either reads V.
          const int valid_rows = seq_k - (w.n_first + n_blocks - 1) * BN;
          if (valid_rows < BN) {
            zero_tail_rows<BN, kCB>(sV_of(n_blocks - 1), valid_rows, threadIdx.x - 128, 2 * 128);
            fence_proxy_async_shared();
            named_barrier_sync(kBothConsumersBarrier, 2 * 128);
          }
        }
        wgmma_fence();
        issue_pv(a, sV_of(n_blocks - 1));
        wgmma_wait_group<0>();
        release(n_blocks - 1);
      }
      // Every wgmma reading Q has completed: the producer may load the next tile's Q (and its
      // first K/V tiles, in the other stages) while this warpgroup writes its output.
      mbarrier_arrive(sm.q_empty);

      float* lse = p.lse ? p.lse + (std::int64_t(w.batch) * sh.heads_q + w.head) * seq_q : nullptr;
      if constexpr (Scheduler::kVarlen) {  // lse is [heads_q, total_q]
        lse = p.lse ? p.lse + std::int64_t(w.head) * sched.p.total_q + w.q_row0 : nullptr;
      }
      if (!via_smem) {
        // Straight to global memory: 4-byte stores from the accumulator layout. Also where a
        // tile has no key at all (causal, seq_k < seq_q): zeros and lse -inf.
        T* out = static_cast<T*>(p.out) + w.batch * sh.o_stride[0] + w.head * sh.o_stride[1];
        if constexpr (Scheduler::kVarlen) out += std::int64_t(w.q_row0) * sh.o_stride[2];
        // The first D / 8 column tiles of the accumulators are O's D columns (the padding's
        // zeros stay in registers).
        const auto& acc_o_cols = *reinterpret_cast<const float(*)[1][D / 8][4]>(&acc_o[0][0][0]);
        store_output<T>(acc_o_cols, stats, out, sh.o_stride[2], lse, warp_row0, seq_q);
      } else {
        // O goes out through shared memory and one TMA store per 64-column block, in the last
        // key tile's V buffer, which has O's [kCB][128][64] layout when BN = BM. Once both
        // warpgroups are done with that V, each writes its 64 rows in the 128-byte swizzle (bank-
        // conflict free: a warp's 8 rows hit 8 different 16-byte chunks), one thread stores
        // them (TMA clips rows past seq_q), and the stage goes back to the producer when the
        // store has read it.
        static_assert(!Cfg::kStageOutput || BN == BM, "O is staged in a V buffer");
        T* sO = sV_of(n_blocks - 1) + cw * 64 * 64;
        named_barrier_sync(kBothConsumersBarrier, 2 * 128);
        const int wrow0 = (threadIdx.x % 128) / 32 * 16, t4 = threadIdx.x % 4;
        finish_output<T>(acc_o, stats, lse, warp_row0, seq_q, [&](int local_row, int dt, std::uint32_t packed) {
          const int row = wrow0 + local_row;  // 0..63 in the warpgroup's rows
          unsigned char* block = reinterpret_cast<unsigned char*>(sO + (dt / 8) * BM * 64);
          *reinterpret_cast<std::uint32_t*>(block + row * 128 + (((dt % 8) ^ (row % 8)) * 16) + 4 * t4) = packed;
        });
        fence_proxy_async_shared();
        named_barrier_sync(kConsumerBarrier + cw, 128);
        if (threadIdx.x % 128 == 0 && w.m0 + cw * 64 < seq_q) {
#pragma unroll
          for (int c = 0; c < kCB; ++c) tma_store_4d(tm_o, sO + c * BM * 64, c * 64, w.m0 + cw * 64, w.head, w.batch);
          tma_store_commit();
          tma_store_wait_read();
        }
        named_barrier_sync(kConsumerBarrier + cw, 128);
        mbarrier_arrive(kv_empty_of(n_blocks - 1));
      }
      g0 += n_blocks;
      ++it;
    }
}

// ---------------------------------------------------------------- the kernel
// Composes the pieces: warpgroup 0 produces, warpgroups 1 and 2 consume.
// V: a dense batch, a dense one with window/softcap, or a packed one (Variant).
template <typename T, typename Cfg, Variant V = Variant::kDense>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    attention_sm90_kernel(const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_k,
                          const __grid_constant__ CUtensorMap tm_v, const __grid_constant__ CUtensorMap tm_o,
                          const KernelParams<V> p, const bool zigzag) {
#if FK_WGMMA_AVAILABLE
  extern __shared__ unsigned char smem_raw[];
  const SharedTiles<T, Cfg> sm(smem_raw);
  using Scheduler =
      std::conditional_t<V == Variant::kVarlen || V == Variant::kPaged,
                         VarlenTileScheduler<Cfg::kBlockM, Cfg::kBlockN, KernelParams<V>>,
                         TileScheduler<Cfg::kBlockM, Cfg::kBlockN, KernelParams<V>>>;
  const Scheduler sched(p, zigzag);
  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) sm.init_barriers();
  __syncthreads();
  if (warpgroup == 0) {
    warpgroup_reg_dealloc<Cfg::kProducerRegs>();
    produce(sm, sched, &tm_q, &tm_k, &tm_v, &tm_o);
  } else {
    warpgroup_reg_alloc<Cfg::kConsumerRegs>();
    consume(sm, sched, p, &tm_o, warpgroup - 1);
  }
#else
  __trap();  // never launched: the host checks the kernel was built for sm_90a
#endif
}

// Tensor maps of q ([B, Hq, Nq, d]), k and v ([B, Hkv, Nk, d]) with boxes of 64 columns x `rows`.
inline bool make_qkv_map(CUtensorMap* map, const void* ptr, DType dtype, std::int64_t batch, std::int64_t heads,
                         std::int64_t seq, std::int64_t head_dim, const std::int64_t (&stride)[3], int rows) {
  const std::uint64_t dims[4] = {std::uint64_t(head_dim), std::uint64_t(seq), std::uint64_t(heads),
                                 std::uint64_t(batch)};
  // The stride of a dimension of size 1 is never followed, but TMA still wants a legal value
  // there: use the packed one.
  std::uint64_t strides[3];
  std::uint64_t packed = std::uint64_t(head_dim) * 2;
  for (int i = 0; i < 3; ++i) {
    strides[i] = dims[i + 1] == 1 ? packed : std::uint64_t(stride[2 - i]) * 2;
    packed = strides[i] * dims[i + 1];
  }
  const std::uint32_t box[4] = {64, std::uint32_t(rows), 1, 1};
  return detail::make_tensor_map_4d(map, ptr, dtype, dims, strides, box);
}

// Launches the kernel on a dense batch (V: kDense or kDenseExtended); returns false (launching
// nothing) when this path does not apply: no sm_90a code in the build, less shared memory per
// block than sm_90's, or tensors TMA cannot describe. The caller then takes the portable path.
template <typename T, typename Cfg, Variant V>
bool launch(const KernelParams<V>& p, DType dtype, cudaStream_t stream) {
  constexpr auto kernel = attention_sm90_kernel<T, Cfg, V>;
  if (!detail::sm90a_kernel_can_run<kernel>(Cfg::kSmemBytes)) return false;
  const AttentionShape& s = p.shape;
  CUtensorMap tm_q, tm_k, tm_v, tm_o{};  // tm_o: only with kStageOutput
  if (!make_qkv_map(&tm_q, p.q, dtype, s.batch, s.heads_q, s.seq_q, s.head_dim, s.q_stride, Cfg::kBlockM) ||
      !make_qkv_map(&tm_k, p.k, dtype, s.batch, s.heads_kv, s.seq_k, s.head_dim, s.k_stride, Cfg::kBlockN) ||
      !make_qkv_map(&tm_v, p.v, dtype, s.batch, s.heads_kv, s.seq_k, s.head_dim, s.v_stride, Cfg::kBlockN) ||
      (Cfg::kStageOutput &&
       !make_qkv_map(&tm_o, p.out, dtype, s.batch, s.heads_q, s.seq_q, s.head_dim, s.o_stride, 64))) {
    return false;
  }
  detail::ensure_smem_opt_in<kernel>(Cfg::kSmemBytes);
  // A persistent grid, one block per SM (shared memory allows one), each looping over work items,
  // so the next tile's Q and K/V loads overlap this tile's epilogue (measured +0-18% on H100 for
  // non-causal, most at N = 1024). Causal tiles differ in cost by up to Nk / 128 times, so causal
  // items pair a long tile with a short one (zigzag, see the kernel) to make them equal: a static
  // round-robin over single causal tiles was less balanced than the hardware's block scheduler
  // (d=128 N=4096: 0.86x -> 0.77x of cuDNN), and so was a dynamic atomic-counter scheduler
  // (DEVELOPMENT_LOG.md, v9). The zigzag items measured +6-17% over one causal tile per block at
  // N = 4096-8192 and +14-28% at N = 1024. (Under a sliding window the tiles cost about the same
  // anyway; the pairing does no harm there.)
  const bool zigzag = p.causal;
  const std::int64_t n_mblocks = (s.seq_q + Cfg::kBlockM - 1) / Cfg::kBlockM;
  const std::int64_t items = (zigzag ? (n_mblocks + 1) / 2 : n_mblocks) * s.heads_q * s.batch;
  const unsigned blocks = unsigned(std::min<std::int64_t>(items, detail::current_sm_count()));
  kernel<<<blocks, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(tm_q, tm_k, tm_v, tm_o, p, zigzag);
  FK_CHECK_LAUNCH();
  return true;
}

// The persistent grid of a packed (varlen or paged) batch: one block per SM, or fewer where there
// are fewer items (VarlenTileScheduler: query blocks of the longest sequence x heads x sequences).
template <typename Cfg>
unsigned varlen_grid(const AttentionShape& s) {
  const std::int64_t items = (s.seq_q + Cfg::kBlockM - 1) / Cfg::kBlockM * s.heads_q * s.batch;
  return unsigned(std::min<std::int64_t>(items, detail::current_sm_count()));
}

// The varlen launch (ExtendedParams' cu_seqlens, with or without window/softcap): the packed q/out
// [total_q, Hq, d] and k/v [total_k, Hkv, d] described as one sequence of all their rows (strides
// {unused, head, token}), a persistent grid (VarlenTileScheduler, varlen_grid). Returns false,
// launching nothing, where the path does not apply (as launch()), or where there are no keys.
template <typename T, typename Cfg>
bool launch_varlen(const ExtendedParams& p, DType dtype, cudaStream_t stream) {
  constexpr auto kernel = attention_sm90_kernel<T, Cfg, Variant::kVarlen>;
  if (!detail::sm90a_kernel_can_run<kernel>(Cfg::kSmemBytes) || p.total_q <= 0 || p.total_k <= 0) return false;
  const AttentionShape& s = p.shape;
  CUtensorMap tm_q, tm_k, tm_v, tm_o{};
  if (!make_qkv_map(&tm_q, p.q, dtype, 1, s.heads_q, p.total_q, s.head_dim, s.q_stride, Cfg::kBlockM) ||
      !make_qkv_map(&tm_k, p.k, dtype, 1, s.heads_kv, p.total_k, s.head_dim, s.k_stride, Cfg::kBlockN) ||
      !make_qkv_map(&tm_v, p.v, dtype, 1, s.heads_kv, p.total_k, s.head_dim, s.v_stride, Cfg::kBlockN)) {
    return false;
  }
  detail::ensure_smem_opt_in<kernel>(Cfg::kSmemBytes);
  kernel<<<varlen_grid<Cfg>(s), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(tm_q, tm_k, tm_v, tm_o, p, /*zigzag=*/false);
  FK_CHECK_LAUNCH();
  return true;
}

// The paged-prefill launch (PagedParams): q/out packed as in launch_varlen, K and V through one
// map of the layer's pool [num_pages, 2, Hkv, page_size, d] seen as 4-D {d, page_size, Hkv,
// 2 x num_pages} with boxes of 64 columns x min(page_size, kBlockN) rows. Returns false,
// launching nothing, where the path does not apply (as launch()).
template <typename T, typename Cfg>
bool launch_paged(const PagedParams& p, DType dtype, cudaStream_t stream) {
  constexpr auto kernel = attention_sm90_kernel<T, Cfg, Variant::kPaged>;
  if (!detail::sm90a_kernel_can_run<kernel>(Cfg::kSmemBytes) || p.total_q <= 0 || p.num_pages <= 0) return false;
  const AttentionShape& s = p.shape;
  CUtensorMap tm_q, tm_kv, tm_o{};
  const std::uint64_t d = std::uint64_t(s.head_dim), rows = std::uint64_t(p.page_size);
  const std::uint64_t dims[4] = {d, rows, std::uint64_t(p.num_kv_heads), 2 * std::uint64_t(p.num_pages)};
  const std::uint64_t strides[3] = {d * 2, rows * d * 2, std::uint64_t(p.num_kv_heads) * rows * d * 2};
  const std::uint32_t box[4] = {64, std::uint32_t(std::min(p.page_size, Cfg::kBlockN)), 1, 1};
  if (!make_qkv_map(&tm_q, p.q, dtype, 1, s.heads_q, p.total_q, s.head_dim, s.q_stride, Cfg::kBlockM) ||
      !detail::make_tensor_map_4d(&tm_kv, p.k, dtype, dims, strides, box)) {
    return false;
  }
  detail::ensure_smem_opt_in<kernel>(Cfg::kSmemBytes);
  kernel<<<varlen_grid<Cfg>(s), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(tm_q, tm_kv, tm_kv, tm_o, p, /*zigzag=*/false);
  FK_CHECK_LAUNCH();
  return true;
}

// The launcher of one head_dim's configuration for one Variant.
template <typename Cfg, Variant V = Variant::kDense>
bool launch_head_dim(const KernelParams<V>& p, DType dtype, cudaStream_t stream) {
  bool launched = false;
  const char* op = V == Variant::kVarlen ? "flash_attention_varlen"
                   : V == Variant::kPaged  ? "paged_prefill_attention"
                                           : "flash_attention";
  dispatch_half_dtype(dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (V == Variant::kVarlen) {
      launched = launch_varlen<T, Cfg>(p, dtype, stream);
    } else if constexpr (V == Variant::kPaged) {
      launched = launch_paged<T, Cfg>(p, dtype, stream);
    } else {
      launched = launch<T, Cfg, V>(p, dtype, stream);
    }
  });
  return launched;
}

// Every variant of one head_dim in one call (the padded head dims' entry points): the varlen
// instance (CfgVarlen: O from registers) for packed batches, else the dense one with window and
// softcap where window_or_softcap, else the plain dense one.
template <typename Cfg, typename CfgVarlen>
bool launch_every_variant(const ExtendedParams& p, bool window_or_softcap, DType dtype, cudaStream_t stream) {
  if (p.cu_seqlens_q != nullptr) return launch_head_dim<CfgVarlen, Variant::kVarlen>(p, dtype, stream);
  if (window_or_softcap) return launch_head_dim<Cfg, Variant::kDenseExtended>(p, dtype, stream);
  return launch_head_dim<Cfg>(static_cast<const Params&>(p), dtype, stream);
}

}  // namespace flashkernel::attention::sm90
