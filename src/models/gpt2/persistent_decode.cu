// The persistent GPT-2 decode step (batch <= 8, head_dim 64).
//
// Why: a decode step of GPT-2 small reads ~250 MB, 60 us at HBM speed, but as a chain of ~100
// kernels (8 per layer) it took 450-580 us on an H200: every kernel is too short to fill the GPU
// and pays launch and drain latency, even inside a CUDA graph. Here one cooperative launch, one
// CTA per SM, runs all layers; the kernel boundaries become grid barriers (~1-2 us each, no
// drain of the whole GPU, no launch), five per layer:
//
//   S1  LN1(h) (every CTA, into shared memory) -> QKV GEMV + bias; q to scratch, K/V straight
//       into this step's slot of the paged cache                                   | barrier
//   S2  attention partials: one task per (sequence, head, KV split), 8 warps over the split's
//       tokens, online softmax, (o, lse) to the workspace                           | barrier
//   S3  combine the splits (every CTA, into shared memory) -> out-proj GEMV + bias + residual
//                                                                                    | barrier
//   S4  LN2(h) -> FC GEMV + bias + tanh GeLU                                         | barrier
//   S5  FC2 GEMV + bias + residual                                                  | barrier
//
// and at the end ln_f(h) -> x_out for the LM head. Each GEMV column (one output feature) is one
// warp streaming that weight row once for all batch rows (tokens on the narrow side), so batch 8
// reads the weights once, like batch 1. A CTA owns a fixed contiguous block of output columns in
// every GEMV, so its slice of each weight matrix is one run of memory. Those slices stream through
// a ring of shared-memory slots (WeightRing): one bulk copy (cp.async.bulk, completing on an
// mbarrier) per GEMV, issued up to `ring_slots` GEMVs (a whole layer with 4 slots) before the
// GEMV runs and re-issued for GEMV g + ring_slots as soon as GEMV g has read its slot. The weights
// do not depend on the step's activations, so HBM streams them while the CTA waits at barriers and
// runs LayerNorm and attention; a GEMV then reads its weights from shared memory. (A first version
// read them with register loads after each barrier, prefetching the next layer into L2: its trace
// showed each GEMV stage at 4-8 us against ~1 us of HBM time, every stage paying a full memory
// round trip and its transfer after its barrier.)
//
// Numerics follow the graph path: fp32 accumulation, each GEMV result rounded once with its bias
// (HF's Conv1D), the residual sum rounded to the model dtype before the next LayerNorm, the
// attention output rounded to the dtype after the split combine. The GEMV's summation order is
// decode_gemv's; LayerNorm and attention sum in another order (last-bit differences).
//
// Data that other CTAs wrote during the kernel (h, q, a, the cache, the partials) is read with
// ld.global.cg: L1 is not coherent across SMs. Index safety: a slot, sequence length or
// page-table entry out of range is never used as an address (the step's output becomes NaN).
#include "models/gpt2/persistent_decode.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>

#include "common/activations.cuh"
#include "common/arg_check.h"
#include "common/block_reduce.cuh"
#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "common/grid_barrier.cuh"
#include "common/index_guard.cuh"
#include "common/launch.h"
#include "common/online_softmax.cuh"
#include "common/tma_sm90.cuh"
#include "common/vector_io.cuh"

namespace flashkernel::models::gpt2_detail {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kHeadDim = 64;
constexpr int kMaxBatch = 8;
constexpr int kMaxLayers = 64;  // the layer table lives in shared memory
constexpr int kMinSplitTokens = 64;  // fewer tokens per split: the combine costs more than it saves
constexpr int kSplitQuantum = 16;
constexpr int kGemvChunk = 12;  // 16-byte weight loads (shared memory) a lane issues before its FMAs
constexpr int kMaxRingSlots = 4;  // weight slices in flight: 4 GEMVs = one layer ahead
constexpr int kGemvMaxParts = 4;  // a CTA with few columns splits each one's K over up to 4 warps
constexpr int kMaxRowVecs = 4;    // LayerNorm keeps a row in registers: n_embd <= 4 * 32 * 8 = 1024
constexpr int kAttnScratchFloats = 2 * kWarps + kWarps * kHeadDim;
constexpr int kGemvScratchFloats = kWarps * kMaxBatch;

// Shared-memory floats besides the GEMV input rows: the attention merge or the split-combine
// weights (never live at once), then the GEMV's K-split partial sums.
std::size_t scratch_floats(std::int64_t batch, std::int64_t heads, std::int64_t splits) {
  return std::size_t(std::max<std::int64_t>(kAttnScratchFloats, batch * heads * (splits + 1))) + kGemvScratchFloats;
}

struct Params {
  const PersistentLayer* layers;
  int n_layer, batch, C, H;
  const void *lnf_gamma, *lnf_beta;
  void *h, *x_out, *q, *a;
  float *part_o, *part_lse;
  const void* pool;
  std::int64_t layer_elems, page_elems;
  int num_pages, page_size_log2, max_pages;
  const std::int32_t* page_table;
  const std::int32_t* seq_lens;
  const std::int64_t* slots;
  int splits, split_tokens;
  int gemv_scratch_offset;  // floats into the scratch area
  int ring_offset;          // bytes into dynamic shared memory: the weight ring
  int ring_slots, slot_bytes;
  int drop_weight_copy;  // test hook (PersistentDecodeArgs::drop_weight_copy)
  float eps, scale_log2;
  detail::GridBarrier barrier;
  unsigned long long* trace;  // nullptr, or timestamps of CTA 0 (see PersistentDecodeArgs::trace)
};

// CTA 0 records the global timer into the trace (a debugging aid, off unless a buffer is given).
__device__ __forceinline__ void trace_mark(const Params& p, int slot) {
  if (p.trace != nullptr && blockIdx.x == 0 && threadIdx.x == 0) p.trace[slot] = detail::global_timer_ns();
}

// The barrier after a stage: trace slots 1 + 2k (thread 0 of CTA 0 reaches barrier k) and 2 + 2k
// (it has passed it).
__device__ __forceinline__ bool stage_barrier(const Params& p, int& barrier) {
  trace_mark(p, 1 + 2 * barrier);
  const bool ok = detail::grid_barrier_sync(p.barrier, barrier);
  trace_mark(p, 2 + 2 * barrier);
  ++barrier;
  return ok;
}

// 16 bytes written by another CTA during this kernel.
template <typename T>
__device__ __forceinline__ Vec<T> load_vec_cg(const T* p) {
  Vec<T> v;
  *reinterpret_cast<int4*>(&v) = __ldcg(reinterpret_cast<const int4*>(p));
  return v;
}

template <typename T>
__device__ __forceinline__ float load_cg(const T* p) {
  static_assert(sizeof(T) == 2, "16-bit model dtypes");
  const unsigned short bits = __ldcg(reinterpret_cast<const unsigned short*>(p));
  T v;
  memcpy(&v, &bits, sizeof(T));
  return to_float(v);
}

// The contiguous block of output columns [c0, c1) this CTA owns in a GEMV of n_cols columns.
__device__ __forceinline__ void cta_columns(int n_cols, int& c0, int& c1) {
  const int per_cta = (n_cols + gridDim.x - 1) / gridDim.x;
  c0 = min(n_cols, int(blockIdx.x) * per_cta);
  c1 = min(n_cols, c0 + per_cta);
}

// GEMV number g of the step (4 per layer, in the order they run): its weights [n_cols, k].
struct GemvWeights {
  const void* w;
  int n_cols, k;
};
__device__ __forceinline__ GemvWeights gemv_weights(const PersistentLayer* layers, int C, int g) {
  const PersistentLayer& L = layers[g / 4];
  switch (g % 4) {
    case 0: return {L.w_qkv, 3 * C, C};
    case 1: return {L.w_proj, C, C};
    case 2: return {L.w_fc, 4 * C, C};
    default: return {L.w_fc2, C, 4 * C};
  }
}

// The ring of shared-memory slots the CTA's weight slices stream through: GEMV g uses slot
// g % n_slots, filled by one bulk copy that completes on full[slot]; GEMVs run in order, so the
// phase parity of g's fill is (g / n_slots) & 1. issue() and release() are called by every thread
// (thread 0 issues); wait() by every thread before it reads the slot.
template <typename T>
struct WeightRing {
  unsigned char* slots;
  std::uint64_t* full;
  const PersistentLayer* layers;
  int n_slots, slot_bytes, C, total;
  // Half the grid barrier's watchdog: a copy that never lands must be reported as itself, not as
  // the barrier the other CTAs then wait at. With equal limits the two timeouts raced (an H100
  // run reported the barrier), since try_wait may suspend the thread for a hardware-chosen time.
  unsigned long long timeout_ns;
  int* fault;
  int drop;  // test hook: CTA 0 announces GEMV `drop`'s bytes but never copies them
  int* stopped;  // shared: a wait timed out; no more copies are issued (the phase is broken)

  __device__ void issue(int g) const {
    if (threadIdx.x != 0 || g >= total || *stopped) return;
    const GemvWeights gw = gemv_weights(layers, C, g);
    int c0, c1;
    cta_columns(gw.n_cols, c0, c1);
    const std::uint32_t bytes = std::uint32_t(c1 - c0) * gw.k * sizeof(T);
    const int slot = g % n_slots;
    // The slot's previous GEMV read it through the generic proxy (ordered before this thread by
    // the caller's __syncthreads); the copy writes it through the async proxy.
    fence_proxy_async_shared();
    mbarrier_arrive_expect_tx(&full[slot], bytes);  // bytes == 0 (no columns): a plain arrival
    if (bytes != 0 && !(blockIdx.x == 0 && g == drop)) {
      bulk_load(slots + std::size_t(slot) * slot_bytes,
                static_cast<const T*>(gw.w) + std::int64_t(c0) * gw.k, bytes, &full[slot]);
    }
  }
  // Waits for GEMV g's slice. Bounded like the grid barrier: a copy that never completes (a bug)
  // sets the fault word to -(1 + g) and the wait gives up; the slot then holds stale weights, and
  // the next grid barrier sees the fault and ends every CTA, so the step reports an error instead
  // of hanging. The copy's fault replaces a barrier's: the other CTAs may time out at the barrier
  // this one has not reached yet, but the missing copy is the cause.
  __device__ const T* wait(int g) const {
    const int slot = g % n_slots;
    const std::uint32_t parity = std::uint32_t((g / n_slots) & 1);
    if (!mbarrier_try_wait(&full[slot], parity)) {
      const unsigned long long start = detail::global_timer_ns();
      while (!mbarrier_try_wait(&full[slot], parity)) {
        if (detail::global_timer_ns() - start > timeout_ns) {
          atomicExch(fault, -(1 + g));
          *stopped = 1;
          break;
        }
      }
    }
    return reinterpret_cast<const T*>(slots + std::size_t(slot) * slot_bytes);
  }
  // GEMV g has been read by every thread: its slot takes GEMV g + n_slots.
  __device__ void release(int g) const {
    __syncthreads();
    issue(g + n_slots);
  }
  // Before leaving early (a barrier timed out): the copies still in flight (GEMVs after `done`)
  // land before the CTA's shared memory goes away.
  __device__ void drain(int done) const {
    for (int g = done + 1; g < min(total, done + 1 + n_slots); ++g) wait(g);
  }
};

// dst[r, :] = LayerNorm(src[r, :]) for r < rows, one warp per row, as add_layernorm computes it
// (two-pass variance over the rounded inputs). The row is loaded once into registers (one L2
// round trip, not one per pass): src is the residual stream, read past L1.
template <typename T>
__device__ void layernorm_rows(const T* src, const T* __restrict__ gamma, const T* __restrict__ beta, T* dst,
                               int rows, int C, float eps) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int nvec = C / 8;
  for (int r = warp; r < rows; r += kWarps) {
    const T* row = src + std::int64_t(r) * C;
    Vec<T> v[kMaxRowVecs], g[kMaxRowVecs], bt[kMaxRowVecs];  // gamma and beta in the same round trip
#pragma unroll
    for (int i = 0; i < kMaxRowVecs; ++i) {
      const int c = lane + i * kWarpSize;
      if (c < nvec) {
        v[i] = load_vec_cg(row + c * 8);
        g[i] = load_vec(gamma + c * 8);
        bt[i] = load_vec(beta + c * 8);
      }
    }
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxRowVecs; ++i) {
      if (lane + i * kWarpSize < nvec) {
#pragma unroll
        for (int j = 0; j < 8; ++j) sum += to_float(v[i].v[j]);
      }
    }
    const float mean = warp_allreduce(sum, SumCombine{}) / float(C);
    float sq = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxRowVecs; ++i) {
      if (lane + i * kWarpSize < nvec) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float d = to_float(v[i].v[j]) - mean;
          sq += d * d;
        }
      }
    }
    const float rstd = rsqrtf(warp_allreduce(sq, SumCombine{}) / float(C) + eps);
#pragma unroll
    for (int i = 0; i < kMaxRowVecs; ++i) {
      const int c = lane + i * kWarpSize;
      if (c < nvec) {
        Vec<T> o;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          float x = (to_float(v[i].v[j]) - mean) * rstd;
          x *= to_float(g[i].v[j]);
          x += to_float(bt[i].v[j]);
          o.v[j] = from_float<T>(x);
        }
        store_vec(dst + std::int64_t(r) * C + c * 8, o);
      }
    }
  }
}

// Sum over the `width` consecutive lanes of a segment (width a power of two); the segment's first
// lane gets the result.
__device__ __forceinline__ float segment_sum(float v, int width) {
  for (int off = width / 2; off > 0; off /= 2) v += __shfl_down_sync(kFullWarpMask, v, off, width);
  return v;
}

// out[r, n] = xs[r, :] . w[n, :] for this CTA's columns n and rows r < rows; epilogue(r, n, sum)
// stores it. w_cta is the CTA's slice of w in shared memory (rows c0..c1, WeightRing). Each weight
// row is read once for all rows. The CTA's columns are split into units that its 8 warps cover in
// one round where they can: more columns than warps -> 2 or 4 columns per warp (a segment of 16 or
// 8 lanes each); fewer -> each column's K split over up to 4 warps, whose partial sums meet in
// shared memory (`partial`, kWarps * kMaxBatch floats) and are added in a fixed order.
//
// The epilogue's operands are loaded with the weights (one round trip for the whole stage):
// epilogue(r, n, sum + bias[n], residual[r, n]) (residual: [rows, n_cols], or nullptr -> 0).
template <typename T, int kMaxB, typename Epilogue>
__device__ __forceinline__ void gemv_columns(const T* xs, const T* w_cta, int n_cols, int k, int rows,
                                             float* partial, const T* __restrict__ bias, const T* residual,
                                             Epilogue&& epilogue) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  int c0, c1;
  cta_columns(n_cols, c0, c1);
  const int ncol = c1 - c0;
  if (ncol <= 0) return;  // the same for the whole CTA
  int per_warp = 1, parts = 1;
  if (ncol > kWarps) {
    while (per_warp * kWarps < ncol && per_warp < 4) per_warp *= 2;
  } else {
    parts = min(kGemvMaxParts, kWarps / ncol);
  }
  const int lanes = kWarpSize / per_warp, li = lane % lanes;
  const int units = ncol * parts;
  const int nvec = k / 8, per_part = (nvec + parts - 1) / parts;
  for (int base = warp * per_warp; base < units; base += kWarps * per_warp) {  // warp-uniform bound
    const int u = base + lane / lanes;
    const bool valid = u < units;
    const int col = u / parts, part = u % parts;
    const int vbeg = part * per_part, vend = valid ? min(nvec, vbeg + per_part) : vbeg;
    const int4* wrow = reinterpret_cast<const int4*>(w_cta + std::int64_t(col) * k);
    float bias_v = 0.f, res_v[kMaxB];
#pragma unroll
    for (int r = 0; r < kMaxB; ++r) res_v[r] = 0.f;
    if (valid && parts == 1) {
      bias_v = to_float(bias[c0 + col]);
      if (residual != nullptr) {
#pragma unroll
        for (int r = 0; r < kMaxB; ++r) {
          if (r < rows) res_v[r] = load_cg(residual + std::int64_t(r) * n_cols + c0 + col);
        }
      }
    }
    float acc[kMaxB];
#pragma unroll
    for (int r = 0; r < kMaxB; ++r) acc[r] = 0.f;
    for (int c = vbeg + li; c < vend; c += lanes * kGemvChunk) {
      Vec<T> wv[kGemvChunk];
#pragma unroll
      for (int i = 0; i < kGemvChunk; ++i) {
        if (c + i * lanes < vend) *reinterpret_cast<int4*>(&wv[i]) = wrow[c + i * lanes];
      }
#pragma unroll
      for (int i = 0; i < kGemvChunk; ++i) {
        const int cv = c + i * lanes;
        if (cv < vend) {
          float wf[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) wf[j] = to_float(wv[i].v[j]);
#pragma unroll
          for (int r = 0; r < kMaxB; ++r) {
            if (r < rows) {
              const Vec<T> xv = load_vec(xs + std::int64_t(r) * k + cv * 8);
#pragma unroll
              for (int j = 0; j < 8; ++j) acc[r] = fmaf(to_float(xv.v[j]), wf[j], acc[r]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kMaxB; ++r) {
      if (r < rows) {
        const float s = segment_sum(acc[r], lanes);
        if (valid && li == 0) {
          if (parts == 1) {
            epilogue(r, c0 + col, s + bias_v, res_v[r]);
          } else {
            partial[u * kMaxB + r] = s;
          }
        }
      }
    }
  }
  if (parts > 1) {
    __syncthreads();
    for (int t = threadIdx.x; t < ncol * rows; t += kThreads) {
      const int col = t / rows, r = t % rows;
      float s = 0.f;
      for (int p = 0; p < parts; ++p) s += partial[(col * parts + p) * kMaxB + r];
      const int n = c0 + col;
      epilogue(r, n, s + to_float(bias[n]), residual != nullptr ? load_cg(residual + std::int64_t(r) * n_cols + n) : 0.f);
    }
    __syncthreads();  // `partial` is reused by the next GEMV
  }
}

// One attention task: sequence b, head `head`, tokens [split * split_tokens, ...) of its
// length. Writes the split's normalized output and log-sum-exp (base 2); an empty split writes
// (0, -inf), a faulty index (NaN, NaN).
template <typename T>
__device__ void attention_task(const Params& p, int layer, int b, int head, int split, float* scratch) {
  constexpr int D = kHeadDim, kLanesPerToken = D / 8, kTokensPerWarp = kWarpSize / kLanesPerToken;
  constexpr int kUnroll = 4;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int grp = lane / kLanesPerToken, gl = lane % kLanesPerToken;
  const int page_size = 1 << p.page_size_log2;
  const int len = p.seq_lens[b];
  const bool len_ok = len >= 1 && std::int64_t(len) <= (std::int64_t(p.max_pages) << p.page_size_log2);
  const int start = split * p.split_tokens;
  const int end = len_ok ? min(len, start + p.split_tokens) : start;

  float qf[8];
  {
    const Vec<T> qv = load_vec_cg(static_cast<const T*>(p.q) + std::int64_t(b) * p.C + head * D + gl * 8);
#pragma unroll
    for (int j = 0; j < 8; ++j) qf[j] = to_float(qv.v[j]) * p.scale_log2;
  }
  float m = softmax::kNegInf, l = 0.f, acc[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) acc[j] = 0.f;
  bool page_bad = false;
  const std::int32_t* table_row = p.page_table + std::int64_t(b) * p.max_pages;
  const T* layer_pool = static_cast<const T*>(p.pool) + layer * p.layer_elems;
  const std::int64_t v_offset = std::int64_t(p.H) * page_size * D;  // V follows K in a page
  constexpr int kStride = kWarps * kTokensPerWarp;
  // The loop runs over the split's whole token range, which does not depend on seq_lens[b]: the
  // page-table reads then go out together with the seq_lens and q loads (one round trip, then
  // one for K/V), and entries past the length (inside the table row) are read but never used.
  // The bound is the same for the whole warp (the shuffles below need every lane).
  const int range_end = int(min(std::int64_t(start) + p.split_tokens, std::int64_t(p.max_pages) << p.page_size_log2));
  for (int base = start + warp * kTokensPerWarp; base < range_end; base += kStride * kUnroll) {
    Vec<T> kv[kUnroll], vv[kUnroll];
    bool valid[kUnroll];
    std::int32_t page[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = base + u * kStride + grp;
      page[u] = t < range_end ? table_row[t >> p.page_size_log2] : 0;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int t = base + u * kStride + grp;
      valid[u] = t < end;
      if (valid[u]) {
        if (!detail::index_in_range(page[u], p.num_pages)) {
          page_bad = true;
          valid[u] = false;
        } else {
          const T* kp = layer_pool + std::int64_t(page[u]) * p.page_elems +
                        (std::int64_t(head) * page_size + (t & (page_size - 1))) * D + gl * 8;
          kv[u] = load_vec_cg(kp);
          vv[u] = load_vec_cg(kp + v_offset);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float s = 0.f;
      if (valid[u]) {
#pragma unroll
        for (int j = 0; j < 8; ++j) s = fmaf(qf[j], to_float(kv[u].v[j]), s);
      }
      s = warp_allreduce<kLanesPerToken>(s, SumCombine{});
      if (valid[u]) {
        const float f = softmax::advance_max(m, l, s);
        const float pr = exp2f(s - m);
        l += pr;
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[j] = fmaf(pr, to_float(vv[u].v[j]), acc[j] * f);
      }
    }
  }
  // The warp's token groups, then the warps.
#pragma unroll
  for (int off = kLanesPerToken; off < kWarpSize; off *= 2) {
    float other[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) other[j] = __shfl_xor_sync(kFullWarpMask, acc[j], off);
    const float om = __shfl_xor_sync(kFullWarpMask, m, off), ol = __shfl_xor_sync(kFullWarpMask, l, off);
    softmax::merge(m, l, acc, om, ol, other);
  }
  float* sm_m = scratch;
  float* sm_l = scratch + kWarps;
  float* sm_acc = scratch + 2 * kWarps;
  if (grp == 0) {
    if (gl == 0) {
      sm_m[warp] = m;
      sm_l[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) sm_acc[warp * D + gl * 8 + j] = acc[j];
  }
  const bool any_page_bad = __syncthreads_or(page_bad);  // also the barrier before the scratch is read
  const bool fault = !len_ok || any_page_bad;
  if (threadIdx.x < D) {
    const int c = threadIdx.x;
    float mx = softmax::kNegInf;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, sm_m[w]);
    float den = 0.f, num = 0.f;
    for (int w = 0; w < kWarps; ++w) {
      const float f = softmax::rescale_factor(sm_m[w], mx);
      den = fmaf(sm_l[w], f, den);
      num = fmaf(sm_acc[w * D + c], f, num);
    }
    const std::int64_t row = (std::int64_t(b) * p.H + head) * p.splits + split;
    const float nan = __int_as_float(0x7fffffff);
    p.part_o[row * D + c] = fault ? nan : (den > 0.f ? num / den : 0.f);
    if (c == 0) p.part_lse[row] = fault ? nan : softmax::log_sum_exp2(mx, den);
  }
  __syncthreads();  // the scratch is reused by the next task
}

// xs[b, :] = the attention output of sequence b: its splits combined by log-sum-exp, rounded to
// the model dtype (a NaN partial makes the row NaN). Two passes of independent loads (split
// weights per (sequence, head) into `weights`, then the outputs) instead of a dependent chain per
// split. weights: batch * heads * (splits + 1) floats.
template <typename T>
__device__ void combine_attention(const Params& p, T* xs, float* weights) {
  constexpr int D = kHeadDim;
  const int S = p.splits, rows = p.batch * p.H;
  float* den_of = weights + rows * S;
  for (int i = threadIdx.x; i < rows * S; i += kThreads) weights[i] = __ldcg(p.part_lse + i);
  __syncthreads();
  for (int bh = threadIdx.x; bh < rows; bh += kThreads) {
    float* wt = weights + bh * S;
    float mx = softmax::kNegInf;
    for (int s = 0; s < S; ++s) mx = MaxCombine{}(mx, wt[s]);
    float den = 0.f;
    for (int s = 0; s < S; ++s) {
      wt[s] = softmax::combine_weight(wt[s], mx);
      den += wt[s];
    }
    den_of[bh] = den;
  }
  __syncthreads();
  // kElems elements per thread at once, kSplits splits per load batch: all loads of a batch are
  // in flight together (a plain loop would wait one round trip per element).
  constexpr int kElems = 8, kSplits = 4;
  const int total = p.batch * p.C;
  auto head_row = [&](int idx) { return (idx / p.C) * p.H + (idx % p.C) / D; };  // (sequence, head) of xs[idx]
  for (int first = threadIdx.x; first < total; first += kElems * kThreads) {
    float num[kElems];
#pragma unroll
    for (int e = 0; e < kElems; ++e) num[e] = 0.f;
    for (int s0 = 0; s0 < S; s0 += kSplits) {
      float o[kElems][kSplits];
#pragma unroll
      for (int e = 0; e < kElems; ++e) {
        const int idx = first + e * kThreads, bh = head_row(idx);
#pragma unroll
        for (int j = 0; j < kSplits; ++j) {
          o[e][j] = (idx < total && s0 + j < S) ? __ldcg(p.part_o + (std::int64_t(bh) * S + s0 + j) * D + idx % D) : 0.f;
        }
      }
#pragma unroll
      for (int e = 0; e < kElems; ++e) {
        const int idx = first + e * kThreads, bh = head_row(idx);
#pragma unroll
        for (int j = 0; j < kSplits; ++j) {
          if (idx < total && s0 + j < S) num[e] = fmaf(weights[bh * S + s0 + j], o[e][j], num[e]);
        }
      }
    }
#pragma unroll
    for (int e = 0; e < kElems; ++e) {
      const int idx = first + e * kThreads;
      if (idx < total) {
        const float den = den_of[head_row(idx)];
        xs[idx] = from_float<T>(den > 0.f || den != den ? num[e] / den : 0.f);
      }
    }
  }
}

template <typename T, int kMaxB>
__global__ void __launch_bounds__(kThreads, 1) persistent_decode_kernel(Params p) {
#if !FK_TMA_AVAILABLE  // the weight ring needs sm_90; plan_persistent_decode refuses older builds
  __trap();
#endif
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int B = p.batch, C = p.C;
  T* xs = reinterpret_cast<T*>(smem_raw);  // [B, up to 4C]: a GEMV's input rows
  float* scratch = reinterpret_cast<float*>(smem_raw + std::size_t(B) * 4 * C * sizeof(T));
  float* partial = scratch + p.gemv_scratch_offset;
  T* h = static_cast<T*>(p.h);
  int barrier = 0;
  // The layer table in shared memory: one round trip at the start, none per layer.
  __shared__ PersistentLayer layer_table[kMaxLayers];
  {
    constexpr int kWords = sizeof(PersistentLayer) / sizeof(const void*);
    const void* const* src = reinterpret_cast<const void* const*>(p.layers);
    const void** dst = reinterpret_cast<const void**>(layer_table);
    for (int i = threadIdx.x; i < p.n_layer * kWords; i += kThreads) dst[i] = src[i];
  }
  // This step's cache slots (read by the QKV epilogue of every layer).
  __shared__ std::int64_t slot[kMaxBatch];
  if (threadIdx.x < B) slot[threadIdx.x] = p.slots[threadIdx.x];
  __shared__ std::uint64_t ring_full[kMaxRingSlots];
  __shared__ int ring_stopped;
  const WeightRing<T> ring{smem_raw + p.ring_offset, ring_full, layer_table, p.ring_slots, p.slot_bytes, C,
                           4 * p.n_layer, p.barrier.timeout_ns / 2, p.barrier.fault, p.drop_weight_copy,
                           &ring_stopped};
  if (threadIdx.x == 0) {
    ring_stopped = 0;
    for (int i = 0; i < p.ring_slots; ++i) mbarrier_init(&ring_full[i], 1);
    fence_mbarrier_init();
  }
  __syncthreads();
  for (int g = 0; g < p.ring_slots; ++g) ring.issue(g);  // the first GEMVs' weights start now

  trace_mark(p, 0);
  // GEMV number (4 per layer) of the last one done; a barrier that times out drains the ring.
  int gemv_done = -1;
  auto barrier_passed = [&] {
    if (stage_barrier(p, barrier)) return true;
    ring.drain(gemv_done);
    return false;
  };
  for (int layer = 0; layer < p.n_layer; ++layer) {
    const PersistentLayer& L = layer_table[layer];
    const int g0 = 4 * layer;

    // S1: LN1 + QKV + bias; K and V into the cache slot of this step.
    layernorm_rows(h, static_cast<const T*>(L.ln1_gamma), static_cast<const T*>(L.ln1_beta), xs, B, C, p.eps);
    __syncthreads();
    {
      const T* bias = static_cast<const T*>(L.b_qkv);
      T* q = static_cast<T*>(p.q);
      T* pool = const_cast<T*>(static_cast<const T*>(p.pool)) + layer * p.layer_elems;
      const int page_size = 1 << p.page_size_log2;
      gemv_columns<T, kMaxB>(xs, ring.wait(g0), 3 * C, C, B, partial, bias, nullptr,
                             [&](int r, int n, float s, float) {
        const T val = from_float<T>(s);
        if (n < C) {
          q[std::int64_t(r) * C + n] = val;
          return;
        }
        const int part = n / C - 1, cc = n - (part + 1) * C;  // part 0: K, 1: V
        if (!detail::index_in_range(slot[r], std::int64_t(p.num_pages) << p.page_size_log2)) return;
        const std::int64_t page = slot[r] >> p.page_size_log2, off = slot[r] & (page_size - 1);
        pool[page * p.page_elems + ((std::int64_t(part) * p.H + cc / kHeadDim) * page_size + off) * kHeadDim +
             cc % kHeadDim] = val;
      });
    }
    ring.release(gemv_done = g0);
    if (!barrier_passed()) return;

    // S2: attention partials.
    for (int task = blockIdx.x; task < B * p.H * p.splits; task += gridDim.x) {
      const int split = task % p.splits, bh = task / p.splits;
      attention_task<T>(p, layer, bh / p.H, bh % p.H, split, scratch);
    }
    if (!barrier_passed()) return;

    // S3: split combine + out-projection + bias + residual.
    combine_attention<T>(p, xs, scratch);
    __syncthreads();
    // h[r, n] = round(round(sum + bias) + h[r, n]): the projection rounded as HF's Conv1D, then
    // the residual sum (add_layernorm's rounding).
    auto add_to_residual = [&](int r, int n, float s, float res) {
      h[std::int64_t(r) * C + n] = from_float<T>(to_float(from_float<T>(s)) + res);
    };
    gemv_columns<T, kMaxB>(xs, ring.wait(g0 + 1), C, C, B, partial, static_cast<const T*>(L.b_proj), h,
                           add_to_residual);
    ring.release(gemv_done = g0 + 1);
    if (!barrier_passed()) return;

    // S4: LN2 + FC + bias + GeLU.
    layernorm_rows(h, static_cast<const T*>(L.ln2_gamma), static_cast<const T*>(L.ln2_beta), xs, B, C, p.eps);
    __syncthreads();
    {
      const T* bias = static_cast<const T*>(L.b_fc);
      T* a = static_cast<T*>(p.a);
      gemv_columns<T, kMaxB>(xs, ring.wait(g0 + 2), 4 * C, C, B, partial, bias, nullptr,
                             [&](int r, int n, float s, float) { a[std::int64_t(r) * 4 * C + n] = from_float<T>(gelu_tanh(s)); });
    }
    ring.release(gemv_done = g0 + 2);
    if (!barrier_passed()) return;

    // S5: FC2 + bias + residual.
    {
      // A thread's loads (up to 8) first, then its stores: one round trip per 32 KiB, not per vector.
      constexpr int kBatchLoads = 8;
      const int n = B * 4 * C / 8;
      for (int first = threadIdx.x; first < n; first += kBatchLoads * kThreads) {
        Vec<T> buf[kBatchLoads];
#pragma unroll
        for (int i = 0; i < kBatchLoads; ++i) {
          const int e = first + i * kThreads;
          if (e < n) buf[i] = load_vec_cg(static_cast<const T*>(p.a) + std::int64_t(e) * 8);
        }
#pragma unroll
        for (int i = 0; i < kBatchLoads; ++i) {
          const int e = first + i * kThreads;
          if (e < n) store_vec(xs + std::int64_t(e) * 8, buf[i]);
        }
      }
    }
    __syncthreads();
    gemv_columns<T, kMaxB>(xs, ring.wait(g0 + 3), C, 4 * C, B, partial, static_cast<const T*>(L.b_fc2), h,
                           add_to_residual);
    ring.release(gemv_done = g0 + 3);
    if (!barrier_passed()) return;
  }
  if (blockIdx.x == 0) {
    layernorm_rows(h, static_cast<const T*>(p.lnf_gamma), static_cast<const T*>(p.lnf_beta),
                   static_cast<T*>(p.x_out), B, C, p.eps);
    __syncthreads();
    trace_mark(p, 1 + 2 * barrier);
  }
}

template <typename T>
const void* kernel_for_batch(std::int64_t batch) {
  if (batch == 1) return reinterpret_cast<const void*>(persistent_decode_kernel<T, 1>);
  if (batch <= 4) return reinterpret_cast<const void*>(persistent_decode_kernel<T, 4>);
  return reinterpret_cast<const void*>(persistent_decode_kernel<T, kMaxBatch>);
}

const void* kernel_for(DType dtype, std::int64_t batch) {
  return dispatch_half_dtype(dtype, "gpt2 persistent decode",
                             [&](auto tag) { return kernel_for_batch<typename decltype(tag)::type>(batch); });
}

}  // namespace

PersistentDecodePlan plan_persistent_decode(const PersistentDecodeArgs& a) {
  PersistentDecodePlan pl;
  auto no = [&](std::string why) {
    pl.why_not = std::move(why);
    return pl;
  };
  if (a.batch < 1 || a.batch > kMaxBatch) return no("batch " + std::to_string(a.batch) + " is not in [1, 8]");
  if (a.n_layer < 1 || a.n_layer > kMaxLayers) return no("n_layer is not in [1, 64]");
  if (a.head_dim != kHeadDim) return no("head_dim " + std::to_string(a.head_dim) + " is not 64");
  if (a.n_embd % 8 != 0 || a.n_embd != a.n_head * a.head_dim) return no("n_embd is not n_head * 64");
  if (a.layout.num_kv_heads != a.n_head || a.layout.head_dim != a.head_dim) return no("KV layout differs");
  if (a.layout.page_size < 1 || (a.layout.page_size & (a.layout.page_size - 1)) != 0) {
    return no("page size is not a power of two");
  }
  if (a.dtype != DType::kFloat16 && a.dtype != DType::kBFloat16) return no("dtype is not fp16/bf16");
  if (a.layout.quantized()) return no("the KV cache is float8 (this kernel appends and reads 16-bit K/V)");
  int device = 0, coop = 0;
  FK_CUDA_CHECK(cudaGetDevice(&device));
  FK_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device));
  if (!coop) return no("the device has no cooperative launch");
  if (a.n_embd > kMaxRowVecs * kWarpSize * 8) return no("n_embd > " + std::to_string(kMaxRowVecs * kWarpSize * 8));
  // Splits first: they size the shared memory (the combine weights).
  const std::int64_t tasks = a.batch * a.n_head;
  const std::int64_t grid = detail::current_sm_count();  // one CTA per SM, all co-resident
  // Attention splits: enough (sequence, head, split) tasks to give most CTAs one, but at least
  // kMinSplitTokens tokens per split.
  const std::int64_t by_grid = std::max<std::int64_t>(1, grid / tasks);
  const std::int64_t by_len = std::max<std::int64_t>(1, (a.max_seq_len + kMinSplitTokens - 1) / kMinSplitTokens);
  const std::int64_t splits = std::min(by_grid, by_len);
  const std::int64_t per = (a.max_seq_len + splits - 1) / splits;
  pl.split_tokens = static_cast<int>((per + kSplitQuantum - 1) / kSplitQuantum * kSplitQuantum);
  pl.splits = static_cast<int>((a.max_seq_len + pl.split_tokens - 1) / pl.split_tokens);
  pl.workspace_bytes = std::size_t(tasks) * pl.splits * (kHeadDim + 1) * sizeof(float);
  const void* kernel = kernel_for(a.dtype, a.batch);
  cudaFuncAttributes attrs{};
  FK_CUDA_CHECK(cudaFuncGetAttributes(&attrs, kernel));
  // The weight ring is bulk copies and mbarriers: Hopper code. (The library's sm_80 build of this
  // kernel is empty; there the engine runs its graph path.)
  if (attrs.binaryVersion < 90) return no("the kernel was not built for sm_90 (bulk copies)");
  // A build whose newest code for this GPU is older PTX (compute_75/80, JIT-compiled: binaryVersion
  // then names the GPU) or FLASHKERNEL_FORCE_ARCH below 9.0 has only the empty kernel.
  if (detail::current_compute_major() < 9) return no("dispatch is not sm_90 (an older build target or FLASHKERNEL_FORCE_ARCH)");
  // Shared memory: the GEMV input rows and the scratch, then the ring. A slot holds the largest
  // slice of a weight matrix one CTA owns (its columns of [n_cols, k]).
  const std::size_t elt = dtype_size(a.dtype), C = static_cast<std::size_t>(a.n_embd);
  const std::size_t ctas = static_cast<std::size_t>(grid);
  auto slice = [&](std::size_t n_cols, std::size_t k) { return (n_cols + ctas - 1) / ctas * k * elt; };
  const std::size_t slot_bytes = (std::max({slice(3 * C, C), slice(C, C), slice(4 * C, C), slice(C, 4 * C)}) + 127) /
                                 128 * 128;
  const std::size_t ring_offset = (std::size_t(a.batch) * 4 * C * elt +
                                   scratch_floats(a.batch, a.n_head, pl.splits) * sizeof(float) + 127) /
                                  128 * 128;
  const std::size_t budget = std::size_t(detail::current_smem_optin_bytes()) - attrs.sharedSizeBytes;
  const std::size_t fit = budget > ring_offset ? (budget - ring_offset) / slot_bytes : 0;
  if (fit < 1) {
    return no("a weight slice of " + std::to_string(slot_bytes) + " bytes does not fit in shared memory per block");
  }
  pl.ring_slots = static_cast<int>(std::min<std::size_t>(kMaxRingSlots, fit));
  pl.slot_bytes = slot_bytes;
  const std::size_t smem = ring_offset + pl.ring_slots * slot_bytes;
  pl.ring_offset = ring_offset;
  FK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int per_sm = 0;
  FK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
  if (per_sm < 1) return no("no block fits on an SM");
  pl.grid = static_cast<int>(grid);
  pl.threads = kThreads;
  pl.smem_bytes = smem;
  pl.supported = true;
  return pl;
}

void persistent_decode(const PersistentDecodeArgs& a, const PersistentDecodePlan& pl, cudaStream_t stream) {
  constexpr const char* kOp = "gpt2 persistent decode";
  detail::require(pl.supported, kOp, "plan", "is not supported: " + pl.why_not);
  detail::require(a.workspace != nullptr && a.workspace_bytes >= pl.workspace_bytes, kOp, "workspace",
                  "must hold " + std::to_string(pl.workspace_bytes) + " bytes");
  detail::require(a.sync != nullptr, kOp, "sync", "must be a device pointer to 2 words");
  Params p{};
  p.layers = a.layers;
  p.n_layer = static_cast<int>(a.n_layer);
  p.batch = static_cast<int>(a.batch);
  p.C = static_cast<int>(a.n_embd);
  p.H = static_cast<int>(a.n_head);
  p.lnf_gamma = a.lnf_gamma;
  p.lnf_beta = a.lnf_beta;
  p.h = a.h;
  p.x_out = a.x_out;
  p.q = a.q;
  p.a = a.a;
  p.part_o = static_cast<float*>(a.workspace);
  p.part_lse = p.part_o + a.batch * a.n_head * pl.splits * kHeadDim;
  p.pool = a.pool;
  p.layer_elems = a.layout.layer_elems();
  p.page_elems = a.layout.page_elems();
  p.num_pages = static_cast<int>(a.layout.num_pages);
  int log2ps = 0;
  while ((std::int64_t(1) << log2ps) < a.layout.page_size) ++log2ps;
  p.page_size_log2 = log2ps;
  p.max_pages = static_cast<int>(a.max_pages);
  p.page_table = a.page_table;
  p.seq_lens = a.seq_lens;
  p.slots = a.slots;
  p.splits = pl.splits;
  p.split_tokens = pl.split_tokens;
  p.gemv_scratch_offset = static_cast<int>(scratch_floats(a.batch, a.n_head, pl.splits) - kGemvScratchFloats);
  p.ring_offset = static_cast<int>(pl.ring_offset);
  p.ring_slots = pl.ring_slots;
  p.slot_bytes = static_cast<int>(pl.slot_bytes);
  p.drop_weight_copy = a.drop_weight_copy;
  p.eps = a.eps;
  p.scale_log2 = a.scale * softmax::kLog2e;
  p.barrier.count = a.sync;
  p.barrier.fault = reinterpret_cast<int*>(a.sync + 1);
  p.barrier.timeout_ns = static_cast<unsigned long long>(a.timeout_ms * 1e6);
  p.barrier.drop_arrival = a.drop_arrival;
  p.trace = a.trace;

  FK_CUDA_CHECK(cudaMemsetAsync(a.sync, 0, sizeof(unsigned int), stream));
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(pl.grid));
  config.blockDim = dim3(static_cast<unsigned>(pl.threads));
  config.dynamicSmemBytes = pl.smem_bytes;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeCooperative;
  attr[0].val.cooperative = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  void* args[] = {&p};
  FK_CUDA_CHECK(cudaLaunchKernelExC(&config, kernel_for(a.dtype, a.batch), args));
}

}  // namespace flashkernel::models::gpt2_detail
