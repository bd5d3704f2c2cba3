// Decode-step projections (M <= 8 token rows): out[m, n] = x[m, :] . w[n, :] (+ bias[n]).
// One warp per output column streams that weight row once with 16-byte loads and applies it to
// every token row, so each weight byte is read from HBM once per step whatever the batch. Replaces
// cuBLAS in the decode graph, where its M = 1..8 kernels (plus a split-K reduce) cost 4-6 us each
// and the QKV output then needed a separate bias + head-split kernel: here the bias is added and
// q, k, v are written straight to their own buffers in the same pass.
//
// The fused decode layer (fused_gemv) folds the neighbouring per-op kernels into the same GEMV:
// the LayerNorm before QKV and FC1 (each CTA normalizes the m rows itself into shared memory), the
// residual add after the two output projections, the GeLU after FC1 and the KV append after QKV.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/activations.cuh"
#include "common/block_reduce.cuh"
#include "common/cuda_check.h"
#include "common/dependent_launch.cuh"
#include "common/dtype_traits.cuh"
#include "common/index_guard.cuh"
#include "common/vector_io.cuh"
#include "models/gpt2/kernels.cuh"

namespace flashkernel::models::gpt2_detail {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarpSize;
// Normalized rows in shared memory: m * k elements within the default 48 KiB (no opt-in).
constexpr std::int64_t kMaxNormBytes = 48 * 1024;

// Row r of the prologue: LayerNorm(row r of g.norm_in) * gamma + beta, rounded to T, into `row`:
// add_layernorm's arithmetic on a row that is already the rounded residual sum (two passes over
// the row for the mean and the variance, then (s - mean) * rstd * gamma + beta). Done by a group of
// kGroup threads of which this one is `rank`: the whole CTA (kGroup = kThreads, block reductions)
// or one warp (kGroup = kWarpSize, shuffles only, no barrier). Each thread reads back only the
// vectors it wrote, so the passes need no barrier between them.
template <typename T, int kGroup>
__device__ void normalize_row(const FusedGemv& g, int r, T* row, int rank, float* scratch) {
  const int k = static_cast<int>(g.k), nvec = k / 8;
  const T* in = static_cast<const T*>(g.norm_in);
  const T* gamma = static_cast<const T*>(g.gamma);
  const T* beta = static_cast<const T*>(g.beta);
  float sum = 0.f;
  for (int c = rank; c < nvec; c += kGroup) {
    const Vec<T> v = load_vec(in + std::int64_t(r) * k + c * 8);
    store_vec(row + c * 8, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) sum += to_float(v.v[j]);
  }
  const float mean = block_allreduce<kGroup>(sum, SumCombine{}, scratch) / float(k);
  float sq = 0.f;
  for (int c = rank; c < nvec; c += kGroup) {
    const Vec<T> v = load_vec(row + c * 8);
#pragma unroll
    for (int j = 0; j < 8; ++j) sq += (to_float(v.v[j]) - mean) * (to_float(v.v[j]) - mean);
  }
  const float rstd = rsqrtf(block_allreduce<kGroup>(sq, SumCombine{}, scratch) / float(k) + g.eps);
  for (int c = rank; c < nvec; c += kGroup) {
    Vec<T> v = load_vec(row + c * 8);
    const Vec<T> gv = load_vec(gamma + c * 8), bv = load_vec(beta + c * 8);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      v.v[j] = from_float<T>((to_float(v.v[j]) - mean) * rstd * to_float(gv.v[j]) + to_float(bv.v[j]));
    }
    store_vec(row + c * 8, v);
  }
}

// x = the normalized rows of g.norm_in into xs [m, k]. One row (batch 1): the whole CTA on it.
// Several: one warp per row, the warps' rows side by side; with the whole CTA on every row in
// turn, each row paid two CTA-wide reductions one after another (8 rows: 16 in a row), which made
// the fused layers 0.77x the per-op graph at batch 8 on an H100.
template <typename T, int kMaxM>
__device__ void normalize_rows(const FusedGemv& g, T* xs, float* scratch) {
  const int k = static_cast<int>(g.k);
  if constexpr (kMaxM == 1) {
    for (int r = 0; r < g.m; ++r) normalize_row<T, kThreads>(g, r, xs + std::int64_t(r) * k, threadIdx.x, scratch);
  } else {
    const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
    for (int r = warp; r < g.m; r += kWarps) normalize_row<T, kWarpSize>(g, r, xs + std::int64_t(r) * k, lane, scratch);
  }
  __syncthreads();  // every warp reads every row
}

// Column `col` of row r: y = the dot product + bias (fp32); where it goes is kOut's.
template <typename T, GemvOut kOut>
__device__ __forceinline__ void store_column(const FusedGemv& g, int r, int col, float y) {
  if constexpr (kOut == GemvOut::kStore) {
    static_cast<T*>(g.out)[std::int64_t(r) * g.n + col] = from_float<T>(y);
  } else if constexpr (kOut == GemvOut::kAddTo) {
    T* o = static_cast<T*>(g.out) + std::int64_t(r) * g.n + col;
    *o = from_float<T>(to_float(from_float<T>(y)) + to_float(*o));
  } else if constexpr (kOut == GemvOut::kGeluTanh) {
    static_cast<T*>(g.out)[std::int64_t(r) * g.n + col] = from_float<T>(gelu_tanh(y));
  } else {
    // QKV: column col of [q | k | v], each [m, split].
    const int split = static_cast<int>(g.split);
    const int part = col / split, c = col - part * split;
    if (part == 0 || g.pool == nullptr) {
      T* dst = static_cast<T*>(part == 0 ? g.q : (part == 1 ? g.k_out : g.v_out));
      dst[std::int64_t(r) * split + c] = from_float<T>(y);
      return;
    }
    const std::int64_t slot = g.slots[r];
    if (!detail::index_in_range(slot, g.num_slots)) return;  // as kv_cache_append: skipped
    const std::int64_t page = slot / g.page_size, off = slot % g.page_size;
    const std::int64_t h = c / g.head_dim, d = c % g.head_dim;
    const int kv = part - 1;
    static_cast<T*>(g.pool)[page * g.page_elems + ((kv * g.heads + h) * g.page_size + off) * g.head_dim + d] =
        from_float<T>(y);
  }
}

template <typename T, int kMaxM, bool kNorm, GemvOut kOut>
__global__ void __launch_bounds__(kThreads) decode_gemv_kernel(FusedGemv g) {
  static_assert(vec_size<T>() == 8, "16-bit elements: 8 per 16-byte vector");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ float scratch[kWarps + 1];
  const int m = static_cast<int>(g.m), n = static_cast<int>(g.n), k = static_cast<int>(g.k);
  const int col = blockIdx.x * kWarps + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const T* w = static_cast<const T*>(g.w);
  // The weights are constant: while the previous kernel of the step finishes (dependent launch),
  // this warp's row is already on its way to L2.
  if (col < n) pdl::prefetch_l2(w + std::int64_t(col) * k, std::int64_t(k) * sizeof(T), lane, kWarpSize);
  pdl::wait_for_prior_grid();  // x (or the rows to normalize) is ready after this
  pdl::allow_dependents();
  const T* x = static_cast<const T*>(g.x);
  if constexpr (kNorm) {
    T* xs = reinterpret_cast<T*>(smem_raw);
    normalize_rows<T, kMaxM>(g, xs, scratch);
    x = xs;
  }
  if (col >= n) return;  // after the CTA-wide normalization's barriers
  const auto* wrow = reinterpret_cast<const Vec<T>*>(w + std::int64_t(col) * k);
  const int nvec = k / 8;
  float acc[kMaxM];
#pragma unroll
  for (int r = 0; r < kMaxM; ++r) acc[r] = 0.f;
#pragma unroll 4
  for (int c = lane; c < nvec; c += kWarpSize) {
    const Vec<T> wv = wrow[c];
    float wf[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) wf[j] = to_float(wv.v[j]);
#pragma unroll
    for (int r = 0; r < kMaxM; ++r) {
      if (r < m) {
        const Vec<T> xv = reinterpret_cast<const Vec<T>*>(x + std::int64_t(r) * k)[c];
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[r] = fmaf(to_float(xv.v[j]), wf[j], acc[r]);
      }
    }
  }
  const float b = g.bias != nullptr ? to_float(static_cast<const T*>(g.bias)[col]) : 0.f;
#pragma unroll
  for (int r = 0; r < kMaxM; ++r) {
    if (r < m) {
      const float s = warp_reduce(acc[r], SumCombine{});
      if (lane == 0) store_column<T, kOut>(g, r, col, s + b);
    }
  }
}

template <typename T, bool kNorm, GemvOut kOut>
void launch(const FusedGemv& g, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((g.n + kWarps - 1) / kWarps));
  const std::size_t smem = kNorm ? static_cast<std::size_t>(g.m * g.k) * sizeof(T) : 0;
  if (g.m == 1) {
    pdl::launch(decode_gemv_kernel<T, 1, kNorm, kOut>, grid, dim3(kThreads), smem, stream, g);
  } else if (g.m <= 4) {
    pdl::launch(decode_gemv_kernel<T, 4, kNorm, kOut>, grid, dim3(kThreads), smem, stream, g);
  } else {
    pdl::launch(decode_gemv_kernel<T, 8, kNorm, kOut>, grid, dim3(kThreads), smem, stream, g);
  }
}

}  // namespace

bool decode_gemv_supported(std::int64_t m, std::int64_t k) { return m >= 1 && m <= kDecodeGemvMaxM && k % 8 == 0; }

bool fused_gemv_supported(std::int64_t m, std::int64_t k) {
  return decode_gemv_supported(m, k) && m * k * 2 <= kMaxNormBytes;
}

void fused_gemv(const FusedGemv& g, cudaStream_t stream) {
  if (g.m == 0) return;
  dispatch_half_dtype(g.dtype, "gpt2", [&](auto tag) {
    using T = typename decltype(tag)::type;
    // The combinations the engine uses (the others would only cost compile time).
    if (g.norm_in != nullptr) {
      if (g.out_kind == GemvOut::kQkv) {
        launch<T, true, GemvOut::kQkv>(g, stream);
      } else {
        launch<T, true, GemvOut::kGeluTanh>(g, stream);
      }
    } else if (g.out_kind == GemvOut::kQkv) {
      launch<T, false, GemvOut::kQkv>(g, stream);
    } else if (g.out_kind == GemvOut::kAddTo) {
      launch<T, false, GemvOut::kAddTo>(g, stream);
    } else {
      launch<T, false, GemvOut::kStore>(g, stream);
    }
  });
  FK_CHECK_LAUNCH();
}

void decode_gemv(const void* x, const void* w, const void* bias, void* out, std::int64_t m, std::int64_t n,
                 std::int64_t k, DType dtype, void* q, void* kk, void* v, std::int64_t split, cudaStream_t stream) {
  FusedGemv g = projection(w, bias, m, n, k, dtype, split > 0 ? GemvOut::kQkv : GemvOut::kStore, out);
  g.x = x;
  g.q = q;
  g.k_out = kk;
  g.v_out = v;
  g.split = split;
  fused_gemv(g, stream);
}

}  // namespace flashkernel::models::gpt2_detail
