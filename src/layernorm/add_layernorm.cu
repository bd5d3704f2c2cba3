// add_layernorm and add_rms_norm: one kernel family, two kernels.
//
// The vector kernel (every row whose width is a multiple of one 16-byte vector, pointers 16-byte
// aligned: all real model widths) keeps the whole row in registers: kWarpsPerRow warps share a
// row (1 for rows of <= 1024 16-bit elements, up to 8 for 8192), each lane holds kVecs vectors.
// All loads of a row are issued before any store, so HBM sees the whole row's requests at once;
// that is safe although residual_out may alias x or residual, because each thread writes only
// the elements it has itself read. Statistics: warp shuffles, plus one shared-memory exchange
// between the warps of a row.
//
// The scalar kernel (odd widths, unaligned pointers) keeps one row per 256-thread CTA in shared
// memory as fp32, so the mean, variance and normalize passes read on-chip data.
//
// Both: s = x + residual + bias is rounded to the tensor dtype once (what residual_out stores)
// and the statistics use that rounded value. Two-pass variance (sum of (s - mean)^2) avoids the
// cancellation of E[s^2] - mean^2. RMS norm is the same with mean = 0 and no beta.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <string>
#include <utility>
#include <type_traits>

#include "common/arg_check.h"
#include "common/block_reduce.cuh"
#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "common/vector_io.cuh"
#include "flashkernel/layernorm.h"
#include "layernorm/add_layernorm_config.h"

namespace flashkernel {
namespace {

using layernorm_detail::kMaxCols;
using layernorm_detail::kThreads;

// What both kernels read: the pointers of one call (optional ones null) and the norm's kind.
template <typename T>
struct NormRows {
  const T* x;
  const T* residual;
  const T* __restrict__ bias;
  const T* __restrict__ gamma;
  const T* __restrict__ beta;
  T* __restrict__ out;
  T* residual_out;
  int rows;
  int cols;
  float eps;
  bool rms;  // mean taken as 0, no beta: RMSNorm
};

// s = x + residual + bias for one element, rounded to T (the value residual_out stores).
template <typename T>
__device__ __forceinline__ T residual_sum(T x, const T* residual_at, const T* bias_at) {
  float s = to_float(x);
  if (residual_at != nullptr) s += to_float(*residual_at);
  if (bias_at != nullptr) s += to_float(*bias_at);
  return from_float<T>(s);
}

// (s - mean) * rstd * gamma + beta for one element (gamma/beta null: 1 and 0).
template <typename T>
__device__ __forceinline__ float normalize(float s, float mean, float rstd, const T* gamma_at, const T* beta_at) {
  float o = (s - mean) * rstd;
  if (gamma_at != nullptr) o *= to_float(*gamma_at);
  if (beta_at != nullptr) o += to_float(*beta_at);
  return o;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) add_norm_scalar_kernel(NormRows<T> p) {
  extern __shared__ float srow[];
  __shared__ float scratch[kThreads / kWarpSize + 1];
  static_assert(sizeof(scratch) == layernorm_detail::kStaticSmemBytes, "add_layernorm_config.h's budget");
  const int cols = p.cols;
  const std::int64_t base = std::int64_t(blockIdx.x) * cols;
  float sum = 0.f;
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    const T rounded = residual_sum(p.x[base + c], p.residual ? p.residual + base + c : nullptr,
                                   p.bias ? p.bias + c : nullptr);
    // residual_out may alias residual or x: this thread has already read element c.
    if (p.residual_out != nullptr) p.residual_out[base + c] = rounded;
    srow[c] = to_float(rounded);
    sum += srow[c];
  }
  const float mean = p.rms ? 0.f : block_allreduce<kThreads>(sum, SumCombine{}, scratch) / float(cols);
  float sq = 0.f;
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    const float d = srow[c] - mean;
    sq += d * d;
  }
  const float rstd = rsqrtf(block_allreduce<kThreads>(sq, SumCombine{}, scratch) / float(cols) + p.eps);
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    p.out[base + c] = from_float<T>(normalize(srow[c], mean, rstd, p.gamma ? p.gamma + c : nullptr,
                                              p.beta ? p.beta + c : nullptr));
  }
}

// The vector kernel's shape: a CTA of max(4, kWarpsPerRow) warps holds 4 / kWarpsPerRow rows (or one).
constexpr int cta_warps(int warps_per_row) { return warps_per_row > 4 ? warps_per_row : 4; }

// Sum of v over the kWarpsPerRow warps of this thread's row, in every thread of the row. slot:
// kCtaWarps floats of shared memory used by this call only (so no barrier guards its reuse).
template <int kWarpsPerRow>
__device__ __forceinline__ float row_allreduce(float v, float* slot) {
  v = warp_allreduce(v, SumCombine{});
  if constexpr (kWarpsPerRow == 1) {
    return v;
  } else {
    const int warp = threadIdx.x / kWarpSize;
    if (threadIdx.x % kWarpSize == 0) slot[warp] = v;
    __syncthreads();
    const int first = warp / kWarpsPerRow * kWarpsPerRow;
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < kWarpsPerRow; ++w) total += slot[first + w];  // fixed order: deterministic
    return total;
  }
}

template <typename T, int kVecs, int kWarpsPerRow>
__global__ void __launch_bounds__(cta_warps(kWarpsPerRow) * kWarpSize) add_norm_vector_kernel(NormRows<T> p) {
  constexpr int kV = vec_size<T>();
  constexpr int kCtaWarps = cta_warps(kWarpsPerRow);
  constexpr int kRowThreads = kWarpsPerRow * kWarpSize;
  __shared__ float partial[2][kCtaWarps];  // mean and variance exchanges (kWarpsPerRow > 1)
  const int row = blockIdx.x * (kCtaWarps / kWarpsPerRow) + threadIdx.x / kRowThreads;
  const int t = threadIdx.x % kRowThreads;
  // Threads of rows past the end stay (with nothing to load) for the barriers of row_allreduce.
  const bool active = row < p.rows;
  const int nvec = p.cols / kV;
  const std::int64_t base = std::int64_t(row) * p.cols;
  auto owns = [&](int i) { return active && i * kRowThreads + t < nvec; };
  auto at = [&](int i) { return (i * kRowThreads + t) * kV; };  // column of vector i's first element

  // Every load of the row first (see the file comment for why this is safe under aliasing).
  Vec<T> xs[kVecs], rs[kVecs];
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (owns(i)) {
      xs[i] = load_vec(p.x + base + at(i));
      if (p.residual != nullptr) rs[i] = load_vec(p.residual + base + at(i));
    }
  }
  float s[kVecs][kV];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (!owns(i)) continue;
    Vec<T> b{};
    if (p.bias != nullptr) b = load_vec(p.bias + at(i));
    Vec<T> rounded;
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      rounded.v[j] = residual_sum(xs[i].v[j], p.residual ? &rs[i].v[j] : nullptr, p.bias ? &b.v[j] : nullptr);
      s[i][j] = to_float(rounded.v[j]);
      sum += s[i][j];
    }
    if (p.residual_out != nullptr) store_vec(p.residual_out + base + at(i), rounded);
  }
  const float mean = p.rms ? 0.f : row_allreduce<kWarpsPerRow>(sum, partial[0]) / float(p.cols);
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (!owns(i)) continue;
#pragma unroll
    for (int j = 0; j < kV; ++j) sq += (s[i][j] - mean) * (s[i][j] - mean);
  }
  const float rstd = rsqrtf(row_allreduce<kWarpsPerRow>(sq, partial[1]) / float(p.cols) + p.eps);
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (!owns(i)) continue;
    Vec<T> g{}, b{}, o;
    if (p.gamma != nullptr) g = load_vec(p.gamma + at(i));
    if (p.beta != nullptr) b = load_vec(p.beta + at(i));
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      o.v[j] = from_float<T>(normalize(s[i][j], mean, rstd, p.gamma ? &g.v[j] : nullptr, p.beta ? &b.v[j] : nullptr));
    }
    store_vec(p.out + base + at(i), o);
  }
}

// Up to 32 fp32 row values per thread (kMaxVecs vectors): 4 for 16-bit types, 8 for fp32.
template <typename T>
constexpr int max_vecs() {
  return 32 / vec_size<T>();
}

// The vector kernel instance for a row of nvec vectors: the fewest warps per row (1, 2, 4, 8)
// whose lanes hold it in max_vecs() vectors each; one warp per row takes the fewest vectors
// (1, 2, 4, 8) that hold it, several warps always max_vecs().
template <typename T>
void launch_vector_kernel(const NormRows<T>& p, cudaStream_t stream) {
  const int nvec = p.cols / vec_size<T>();
  auto launch = [&](auto kernel, int warps_per_row) {
    const int rows_per_cta = cta_warps(warps_per_row) / warps_per_row;
    const unsigned grid = static_cast<unsigned>((p.rows + rows_per_cta - 1) / rows_per_cta);
    kernel<<<grid, cta_warps(warps_per_row) * kWarpSize, 0, stream>>>(p);
    FK_CHECK_LAUNCH();
  };
  constexpr int kMax = max_vecs<T>();
  if (nvec <= kWarpSize) return launch(add_norm_vector_kernel<T, 1, 1>, 1);
  if (nvec <= 2 * kWarpSize) return launch(add_norm_vector_kernel<T, 2, 1>, 1);
  if (nvec <= 4 * kWarpSize) return launch(add_norm_vector_kernel<T, 4, 1>, 1);
  if constexpr (kMax == 8) {
    if (nvec <= 8 * kWarpSize) return launch(add_norm_vector_kernel<T, 8, 1>, 1);
  }
  if (nvec <= 2 * kMax * kWarpSize) return launch(add_norm_vector_kernel<T, kMax, 2>, 2);
  if (nvec <= 4 * kMax * kWarpSize) return launch(add_norm_vector_kernel<T, kMax, 4>, 4);
  static_assert(8 * kMax * kWarpSize * vec_size<T>() >= kMaxCols, "eight warps hold the widest row");
  launch(add_norm_vector_kernel<T, kMax, 8>, 8);
}

bool aligned16(const void* p) { return p == nullptr || is_aligned(p); }

// The one implementation behind both public entry points (op: the name errors carry).
void add_norm(const char* op, bool rms, const void* x, const void* residual, const void* bias, const void* gamma,
              const void* beta, void* out, void* residual_out, std::int64_t rows, std::int64_t cols, float eps,
              DType dtype, cudaStream_t stream) {
  detail::require(rows >= 0 && rows <= 0x7fffffff, op, "rows", "must be in [0, 2^31), got " + std::to_string(rows));
  detail::require(cols >= 1 && cols <= kMaxCols, op, "cols",
                  "must be in [1, " + std::to_string(kMaxCols) + "], got " + std::to_string(cols));
  detail::require(eps > 0.f, op, "eps", "must be > 0, got " + std::to_string(eps));
  if (rows == 0) return;
  detail::require(x != nullptr, op, "x", "must be a non-null device pointer");
  detail::require(out != nullptr, op, "out", "must be a non-null device pointer");
  detail::require(out != x && out != residual, op, "out", "must not alias x or residual");
  const std::size_t elem = dtype_size(dtype);
  const std::pair<const void*, const char*> pointers[] = {{x, "x"},         {residual, "residual"}, {bias, "bias"},
                                                          {gamma, "gamma"}, {beta, "beta"},         {out, "out"},
                                                          {residual_out, "residual_out"}};
  bool all_aligned16 = true;
  for (const auto& [ptr, name] : pointers) {
    detail::require_element_aligned(ptr, elem, op, name);
    all_aligned16 = all_aligned16 && aligned16(ptr);
  }
  dispatch_dtype(dtype, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const NormRows<T> p{static_cast<const T*>(x),     static_cast<const T*>(residual), static_cast<const T*>(bias),
                        static_cast<const T*>(gamma), static_cast<const T*>(beta),     static_cast<T*>(out),
                        static_cast<T*>(residual_out), static_cast<int>(rows),         static_cast<int>(cols),
                        eps,                          rms};
    if (all_aligned16 && cols % vec_size<T>() == 0) return launch_vector_kernel(p, stream);
    add_norm_scalar_kernel<T><<<static_cast<unsigned>(rows), kThreads,
                                layernorm_detail::row_kernel_dynamic_smem_bytes(cols), stream>>>(p);
    FK_CHECK_LAUNCH();
  });
}

}  // namespace

void add_layernorm(const void* x, const void* residual, const void* bias, const void* gamma, const void* beta, void* out,
                   void* residual_out, std::int64_t rows, std::int64_t cols, float eps, DType dtype,
                   cudaStream_t stream) {
  add_norm("add_layernorm", false, x, residual, bias, gamma, beta, out, residual_out, rows, cols, eps, dtype, stream);
}

void add_rms_norm(const void* x, const void* residual, const void* gamma, void* out, void* residual_out,
                  std::int64_t rows, std::int64_t cols, float eps, DType dtype, cudaStream_t stream) {
  add_norm("add_rms_norm", true, x, residual, nullptr, gamma, nullptr, out, residual_out, rows, cols, eps, dtype,
           stream);
}

}  // namespace flashkernel
