// The Hopper attention kernel's work: which (batch or sequence, head, query block) tiles a block
// runs and which key tiles each covers (TileScheduler for dense batches, VarlenTileScheduler for
// packed and paged ones), and the kernel's variants (Variant, KernelParams). Both roles of the
// kernel (attention_sm90.cuh) walk the same tiles through the same scheduler.
#pragma once
#include <cstdint>
#include <type_traits>

#include "attention/attention_params.h"
#include "common/attention_tile.cuh"

namespace flashkernel::attention::sm90 {

// Work items are (batch, head) pairs' query blocks, counted from the last, the pairs one after
// another: blocks running together share a pair's K/V in L2. A block runs items blockIdx.x,
// blockIdx.x + gridDim.x, ... (persistent when the grid is smaller than the item count; see
// launch()). An item is one query block, or with `zigzag` (causal) two: query blocks i and
// n_mblocks - 1 - i of one pair, the longest and the shortest left, whose key tiles add up to
// the same count for every item, so a static round-robin over items is balanced. (With an odd
// n_mblocks the middle block is an item of its own.) Both roles walk the same tile sequence, and
// the K/V ring's slots and phases continue from one tile to the next.
// A work tile runs key tiles n_first .. n_first + n_blocks - 1 (n_first > 0 only under a window).
struct WorkTile {
  int m0, head, head_kv, batch, n_first, n_blocks;
  bool valid;
};

// What a kernel instance takes: a dense batch (Params), a dense one with a window or softcap, a
// packed (varlen) one with or without them (both ExtendedParams), or a packed query batch whose
// keys and values are read through a page table from a paged KV cache's pool (kPaged,
// PagedParams: prefill over the cache). The window and softcap cost run-time checks in the
// mainloop, so the plain dense instance, the one most calls run, has none.
enum class Variant { kDense, kDenseExtended, kVarlen, kPaged };
template <Variant V>
using KernelParams = std::conditional_t<V == Variant::kDense, Params,
                                        std::conditional_t<V == Variant::kPaged, PagedParams, ExtendedParams>>;

// The key tiles of query rows [m0, m0 + BM): [0, n_end) of the causal bound, or under an
// ExtendedParams window the range of window_key_tiles. Sets w.n_first and w.n_blocks.
template <int BM, int BN, typename P>
__device__ __forceinline__ void set_key_tiles(WorkTile& w, const P& p, int seq_k, int diag) {
  if constexpr (std::is_base_of_v<ExtendedParams, P>) {
    w.n_first = 0;
    const int end = window_key_tiles<BM, BN>(w.m0, seq_k, diag, p.window_left, p.window_right, w.n_first);
    w.n_blocks = max(0, end - w.n_first);
  } else {
    const int n_end = p.causal ? min(seq_k, w.m0 + BM + diag) : seq_k;
    w.n_first = 0;
    w.n_blocks = n_end > 0 ? (n_end + BN - 1) / BN : 0;
  }
}

template <int BM, int BN, typename P = Params>
struct TileScheduler {
  static constexpr bool kVarlen = false;
  static constexpr bool kPaged = false;
  static constexpr bool kExtended = std::is_same_v<P, ExtendedParams>;
  const P& p;
  int seq_q, seq_k, diag, n_mblocks, items_per_pair, tiles_per_item;
  std::int64_t n_items;

  __device__ __forceinline__ TileScheduler(const P& params, bool zigzag) : p(params) {
    const AttentionShape& sh = p.shape;
    seq_q = int(sh.seq_q);
    seq_k = int(sh.seq_k);
    diag = seq_k - seq_q;  // causal: query i sees keys j <= i + diag
    n_mblocks = (seq_q + BM - 1) / BM;
    items_per_pair = zigzag ? (n_mblocks + 1) / 2 : n_mblocks;
    n_items = std::int64_t(items_per_pair) * sh.heads_q * sh.batch;
    tiles_per_item = zigzag ? 2 : 1;
  }

  __device__ __forceinline__ WorkTile tile(std::int64_t item, int half) const {
    const AttentionShape& sh = p.shape;
    WorkTile w;
    const std::int64_t pair = item / items_per_pair;
    const int i = int(item % items_per_pair);
    const int mblock = half == 0 ? n_mblocks - 1 - i : i;
    w.valid = half == 0 || mblock != n_mblocks - 1 - i;  // the middle block of an odd count: once
    w.m0 = mblock * BM;
    w.head = int(pair % sh.heads_q);
    w.batch = int(pair / sh.heads_q);
    w.head_kv = w.head / int(sh.heads_q / sh.heads_kv);
    set_key_tiles<BM, BN>(w, p, seq_k, diag);
    return w;
  }
};
// Varlen (a packed batch, ExtendedParams' cu_seqlens): a work tile also carries its sequence's
// first rows in the packed q/out and k/v tensors and its lengths.
struct VarlenWorkTile : WorkTile {
  int seq_q, seq_k, q_row0, k_row0;
};

// The varlen scheduler. Sequence lengths live on the device, so the items are every query block
// the longest sequence has for every (sequence, head) pair, and an item past its sequence's end
// is skipped. Items are ordered highest query block first: those exist only for the longest
// sequences, the costliest tiles, so they start first. The grid is persistent, as the dense one
// (launch_varlen): one item per block measured no faster than the portable kernel on ragged
// batches (H100: 3.02 vs 3.12 ms non-causal, while equal-length sequences ran at 0.93x the dense
// kernel): every item paid a block's start and drain, and about half of them were empty. Takes
// windows and softcap (causal arrives as window_right = 0).
// P = PagedParams: keys come from the paged cache, seq_lens_k[b] of them (clamped to what its
// page-table row can hold), at key index 0 of the sequence's pages.
template <int BM, int BN, typename P = ExtendedParams>
struct VarlenTileScheduler {
  static constexpr bool kVarlen = true;
  static constexpr bool kExtended = true;
  static constexpr bool kPaged = std::is_same_v<P, PagedParams>;
  const P& p;
  int n_mblocks, tiles_per_item;
  std::int64_t pairs, n_items;

  __device__ __forceinline__ VarlenTileScheduler(const P& params, bool /*zigzag: never*/) : p(params) {
    n_mblocks = int((p.shape.seq_q + BM - 1) / BM);
    pairs = std::int64_t(p.shape.heads_q) * p.shape.batch;
    n_items = n_mblocks * pairs;
    tiles_per_item = 1;
  }

  __device__ __forceinline__ VarlenWorkTile tile(std::int64_t item, int /*half*/) const {
    const AttentionShape& sh = p.shape;
    VarlenWorkTile w;
    const std::int64_t pair = item % pairs;
    w.m0 = (n_mblocks - 1 - int(item / pairs)) * BM;
    w.head = int(pair % sh.heads_q);
    w.batch = int(pair / sh.heads_q);
    w.head_kv = w.head / int(sh.heads_q / sh.heads_kv);
    w.seq_q = varlen_sequence(p.cu_seqlens_q, w.batch, p.total_q, int(sh.seq_q), w.q_row0);
    if constexpr (kPaged) {
      w.k_row0 = 0;
      w.seq_k = max(0, min(p.seq_lens_k[w.batch], min(int(sh.seq_k), p.table_stride * p.page_size)));
    } else {
      w.seq_k = varlen_sequence(p.cu_seqlens_k, w.batch, p.total_k, int(sh.seq_k), w.k_row0);
    }
    w.valid = w.m0 < w.seq_q;
    set_key_tiles<BM, BN>(w, p, w.seq_k, w.seq_k - w.seq_q);
    return w;
  }
};

// A role walks its block's work tiles as
//   for (std::int64_t item = blockIdx.x; item < sched.n_items; item += gridDim.x)
//     for (int half = 0; half < sched.tiles_per_item; ++half) {
//       const WorkTile w = sched.tile(item, half);
//       if (!w.valid) continue;
//       ...
// (a visitor taking a lambda measured as other SASS for the consumers, so the loop is written out).

}  // namespace flashkernel::attention::sm90
