// The row-in-registers kernel of add_layernorm / add_rms_norm (see add_layernorm.cu for the
// design), in a header so that a tuning benchmark can launch instances the library does not
// choose. The library's choice per width is launch_vector_kernel.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/block_reduce.cuh"
#include "common/cuda_check.h"
#include "common/dependent_launch.cuh"
#include "common/dtype_traits.cuh"
#include "common/vector_io.cuh"
#include "layernorm/add_layernorm_config.h"

namespace flashkernel::layernorm_detail {

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

// Variants of the vector kernel for tuning sweeps (bench/cpp/layernorm_variants_bench.cu), a bit
// set (nvcc takes no class-type template arguments on kernels); the library uses kLibrary, the
// sweep's winner (DEVELOPMENT_LOG.md: kPairConvert measured 2-14% faster on an H100 at every
// width, both dtypes, both norms; kEarlyAffine and kSumInT slower or even).
namespace norm_variant {
// Keep the rounded sums as vectors of T, not fp32: half the registers for 16-bit T, room for 8
// vectors per lane (fewer warps per row, more rows per SM).
inline constexpr unsigned kSumInT = 1;
// Load gamma/beta before the first row reduction, not after the second: their latency hides
// behind the reductions, at the cost of registers.
inline constexpr unsigned kEarlyAffine = 2;
// 16-bit <-> fp32 two elements per instruction (to_float_array / from_float_array): otherwise
// bf16 rounds one element per F2F and repacks with PRMT (88 registers against fp16's 60).
inline constexpr unsigned kPairConvert = 4;
// What the library launches.
inline constexpr unsigned kLibrary = kPairConvert;
}  // namespace norm_variant

template <typename T, int kVecs, int kWarpsPerRow, unsigned kVariant = 0>
__global__ void __launch_bounds__(cta_warps(kWarpsPerRow) * kWarpSize) add_norm_vector_kernel(NormRows<T> p) {
  constexpr int kV = vec_size<T>();
  constexpr int kCtaWarps = cta_warps(kWarpsPerRow);
  constexpr int kRowThreads = kWarpsPerRow * kWarpSize;
  constexpr bool kSumInT = (kVariant & norm_variant::kSumInT) != 0;
  constexpr bool kEarlyAffine = (kVariant & norm_variant::kEarlyAffine) != 0;
  constexpr bool kPairConvert = (kVariant & norm_variant::kPairConvert) != 0;
  __shared__ float partial[2][kCtaWarps];  // mean and variance exchanges (kWarpsPerRow > 1)
  const int row = blockIdx.x * (kCtaWarps / kWarpsPerRow) + threadIdx.x / kRowThreads;
  const int t = threadIdx.x % kRowThreads;
  // Threads of rows past the end stay (with nothing to load) for the barriers of row_allreduce.
  const bool active = row < p.rows;
  const int nvec = p.cols / kV;
  const std::int64_t base = std::int64_t(row) * p.cols;
  auto owns = [&](int i) { return active && i * kRowThreads + t < nvec; };
  auto at = [&](int i) { return (i * kRowThreads + t) * kV; };  // column of vector i's first element

  pdl::wait_for_prior_grid();  // launched as a dependent (pdl::launch): x and residual are ready after this
  pdl::allow_dependents();
  // Every load of the row first (see the file comment for why this is safe under aliasing).
  Vec<T> xs[kVecs], rs[kVecs];
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (owns(i)) {
      xs[i] = load_vec(p.x + base + at(i));
      if (p.residual != nullptr) rs[i] = load_vec(p.residual + base + at(i));
    }
  }
  float s[kSumInT ? 1 : kVecs][kV];  // the rounded sums, as fp32 ...
  Vec<T> sv[kSumInT ? kVecs : 1];     // ... or as T (kSumInT)
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (!owns(i)) continue;
    Vec<T> b{};
    if (p.bias != nullptr) b = load_vec(p.bias + at(i));
    Vec<T> rounded;
    if constexpr (kPairConvert) {
      // The same additions in the same order as residual_sum, converted two at a time.
      float f[kV], add[kV];
      to_float_array(xs[i].v, f);
      if (p.residual != nullptr) {
        to_float_array(rs[i].v, add);
#pragma unroll
        for (int j = 0; j < kV; ++j) f[j] += add[j];
      }
      if (p.bias != nullptr) {
        to_float_array(b.v, add);
#pragma unroll
        for (int j = 0; j < kV; ++j) f[j] += add[j];
      }
      from_float_array(f, rounded.v);
      to_float_array(rounded.v, f);  // the rounded sums, as fp32
#pragma unroll
      for (int j = 0; j < kV; ++j) {
        if constexpr (!kSumInT) s[i][j] = f[j];
        sum += f[j];
      }
    } else {
#pragma unroll
      for (int j = 0; j < kV; ++j) {
        rounded.v[j] = residual_sum(xs[i].v[j], p.residual ? &rs[i].v[j] : nullptr, p.bias ? &b.v[j] : nullptr);
        if constexpr (kSumInT) {
          sum += to_float(rounded.v[j]);
        } else {
          s[i][j] = to_float(rounded.v[j]);
          sum += s[i][j];
        }
      }
    }
    if constexpr (kSumInT) sv[i] = rounded;
    if (p.residual_out != nullptr) store_vec(p.residual_out + base + at(i), rounded);
  }
  Vec<T> gs[kEarlyAffine ? kVecs : 1], bs[kEarlyAffine ? kVecs : 1];
  if constexpr (kEarlyAffine) {
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      if (!owns(i)) continue;
      if (p.gamma != nullptr) gs[i] = load_vec(p.gamma + at(i));
      if (p.beta != nullptr) bs[i] = load_vec(p.beta + at(i));
    }
  }
  // Element j of vector i of the rounded sums, as fp32.
#define FK_SUM_AT(i, j) (kSumInT ? to_float(sv[kSumInT ? (i) : 0].v[j]) : s[kSumInT ? 0 : (i)][j])
  const float mean = p.rms ? 0.f : row_allreduce<kWarpsPerRow>(sum, partial[0]) / float(p.cols);
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (!owns(i)) continue;
#pragma unroll
    for (int j = 0; j < kV; ++j) sq += (FK_SUM_AT(i, j) - mean) * (FK_SUM_AT(i, j) - mean);
  }
  const float rstd = rsqrtf(row_allreduce<kWarpsPerRow>(sq, partial[1]) / float(p.cols) + p.eps);
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (!owns(i)) continue;
    Vec<T> g{}, b{}, o;
    if constexpr (kEarlyAffine) {
      g = gs[i];
      b = bs[i];
    } else {
      if (p.gamma != nullptr) g = load_vec(p.gamma + at(i));
      if (p.beta != nullptr) b = load_vec(p.beta + at(i));
    }
    if constexpr (kPairConvert) {
      // normalize's arithmetic in its order, converted two at a time.
      float of[kV], gf[kV], bf[kV];
      to_float_array(g.v, gf);
      to_float_array(b.v, bf);
#pragma unroll
      for (int j = 0; j < kV; ++j) {
        of[j] = (FK_SUM_AT(i, j) - mean) * rstd;
        if (p.gamma != nullptr) of[j] *= gf[j];
        if (p.beta != nullptr) of[j] += bf[j];
      }
      from_float_array(of, o.v);
    } else {
#pragma unroll
      for (int j = 0; j < kV; ++j) {
        o.v[j] = from_float<T>(
            normalize(FK_SUM_AT(i, j), mean, rstd, p.gamma ? &g.v[j] : nullptr, p.beta ? &b.v[j] : nullptr));
      }
    }
    store_vec(p.out + base + at(i), o);
  }
#undef FK_SUM_AT
}

// One launch of a vector-kernel instance over all rows (cta_warps / kWarpsPerRow rows per CTA).
template <typename T, int kVecs, int kWarpsPerRow, unsigned kVariant = 0>
void launch_vector_instance(const NormRows<T>& p, cudaStream_t stream) {
  constexpr int kRowsPerCta = cta_warps(kWarpsPerRow) / kWarpsPerRow;
  const unsigned grid = static_cast<unsigned>((p.rows + kRowsPerCta - 1) / kRowsPerCta);
  pdl::launch(add_norm_vector_kernel<T, kVecs, kWarpsPerRow, kVariant>, grid, dim3(cta_warps(kWarpsPerRow) * kWarpSize),
              0, stream, p);
  FK_CHECK_LAUNCH();
}

// Up to 32 fp32 row values per thread (kMaxVecs vectors): 4 for 16-bit types, 8 for fp32.
template <typename T>
constexpr int max_vecs() {
  return 32 / vec_size<T>();
}

// The vector kernel instance for a row of nvec vectors: the fewest warps per row (1, 2, 4, 8)
// whose lanes hold it in kMax vectors each; one warp per row takes the fewest vectors (1, 2, 4,
// 8) that hold it, several warps always kMax. The library uses the defaults; a sweep can ask for
// kMax = 8 with 16-bit types (with kSumInT, to keep the registers) and the other variants.
template <typename T, unsigned kVariant = norm_variant::kLibrary, int kMax = max_vecs<T>()>
void launch_vector_kernel(const NormRows<T>& p, cudaStream_t stream) {
  const int nvec = p.cols / vec_size<T>();
  if (nvec <= kWarpSize) return launch_vector_instance<T, 1, 1, kVariant>(p, stream);
  if (nvec <= 2 * kWarpSize) return launch_vector_instance<T, 2, 1, kVariant>(p, stream);
  if (nvec <= 4 * kWarpSize) return launch_vector_instance<T, 4, 1, kVariant>(p, stream);
  if constexpr (kMax == 8) {
    if (nvec <= 8 * kWarpSize) return launch_vector_instance<T, 8, 1, kVariant>(p, stream);
  }
  if (nvec <= 2 * kMax * kWarpSize) return launch_vector_instance<T, kMax, 2, kVariant>(p, stream);
  if (nvec <= 4 * kMax * kWarpSize) return launch_vector_instance<T, kMax, 4, kVariant>(p, stream);
  static_assert(8 * kMax * kWarpSize * vec_size<T>() >= kMaxCols, "eight warps hold the widest row");
  launch_vector_instance<T, kMax, 8, kVariant>(p, stream);
}

}  // namespace flashkernel::layernorm_detail
