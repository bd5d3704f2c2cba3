// add_layernorm, two kernels. Rows of <= 1024 16-bit elements: one warp per row (below). Others:
// one CTA per row. The row's sum s = x + residual + bias is formed once, rounded to
// the tensor dtype (what residual_out stores), and kept in shared memory as fp32, so the mean and
// the variance passes and the normalize pass read on-chip data, not the inputs again. Two-pass
// variance (sum of (s - mean)^2) avoids the cancellation of E[s^2] - mean^2.
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

constexpr const char* kOp = "add_layernorm";
using layernorm_detail::kMaxCols;
using layernorm_detail::kThreads;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    add_layernorm_kernel(const T* x, const T* residual, const T* __restrict__ bias,
                         const T* __restrict__ gamma, const T* __restrict__ beta, T* __restrict__ out, T* residual_out,
                         int cols, float eps) {
  extern __shared__ float srow[];
  __shared__ float scratch[kThreads / kWarpSize + 1];
  static_assert(sizeof(scratch) == layernorm_detail::kStaticSmemBytes, "add_layernorm_config.h's budget");
  const std::int64_t base = std::int64_t(blockIdx.x) * cols;
  float sum = 0.f;
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    float s = to_float(x[base + c]);
    if (residual != nullptr) s += to_float(residual[base + c]);
    if (bias != nullptr) s += to_float(bias[c]);
    const T rounded = from_float<T>(s);
    // residual_out may alias residual or x: this thread has already read element c.
    if (residual_out != nullptr) residual_out[base + c] = rounded;
    s = to_float(rounded);
    srow[c] = s;
    sum += s;
  }
  const float mean = block_allreduce<kThreads>(sum, SumCombine{}, scratch) / float(cols);
  float sq = 0.f;
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    const float d = srow[c] - mean;
    sq += d * d;
  }
  const float var = block_allreduce<kThreads>(sq, SumCombine{}, scratch) / float(cols);
  const float rstd = rsqrtf(var + eps);
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    float o = (srow[c] - mean) * rstd;
    if (gamma != nullptr) o *= to_float(gamma[c]);
    if (beta != nullptr) o += to_float(beta[c]);
    out[base + c] = from_float<T>(o);
  }
}

// Rows of <= 1024 16-bit elements (the hidden sizes of GPT-2-class models, and the decode case of
// 1-8 rows where one 256-thread CTA per row is mostly idle): one warp per row, the row in
// registers as 16-byte vectors, statistics by warp shuffles only (no shared memory, no barrier).
constexpr int kWarpRowMaxCols = 1024;
constexpr int kWarpsPerBlock = 4;

template <typename T, int kVecs>
__global__ void __launch_bounds__(kWarpsPerBlock * kWarpSize)
    add_layernorm_warp_kernel(const T* x, const T* residual, const T* __restrict__ bias, const T* __restrict__ gamma,
                              const T* __restrict__ beta, T* __restrict__ out, T* residual_out, int rows, int cols,
                              float eps) {
  static_assert(vec_size<T>() == 8, "16-bit elements: 8 per 16-byte vector");
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;  // whole warps exit together
  const int lane = threadIdx.x % kWarpSize;
  const int nvec = cols / 8;
  const std::int64_t base = std::int64_t(row) * cols;
  float s[kVecs][8];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int c = i * kWarpSize + lane;
    if (c < nvec) {
      const Vec<T> a = reinterpret_cast<const Vec<T>*>(x + base)[c];
      Vec<T> r{}, b{};
      if (residual != nullptr) r = reinterpret_cast<const Vec<T>*>(residual + base)[c];
      if (bias != nullptr) b = reinterpret_cast<const Vec<T>*>(bias)[c];
      Vec<T> rounded;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        float v = to_float(a.v[j]);
        if (residual != nullptr) v += to_float(r.v[j]);
        if (bias != nullptr) v += to_float(b.v[j]);
        rounded.v[j] = from_float<T>(v);
        s[i][j] = to_float(rounded.v[j]);
        sum += s[i][j];
      }
      if (residual_out != nullptr) reinterpret_cast<Vec<T>*>(residual_out + base)[c] = rounded;
    }
  }
  const float mean = warp_allreduce(sum, SumCombine{}) / float(cols);
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (i * kWarpSize + lane < nvec) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float d = s[i][j] - mean;
        sq += d * d;
      }
    }
  }
  const float rstd = rsqrtf(warp_allreduce(sq, SumCombine{}) / float(cols) + eps);
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int c = i * kWarpSize + lane;
    if (c < nvec) {
      Vec<T> g{}, b{}, o;
      if (gamma != nullptr) g = reinterpret_cast<const Vec<T>*>(gamma)[c];
      if (beta != nullptr) b = reinterpret_cast<const Vec<T>*>(beta)[c];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        float v = (s[i][j] - mean) * rstd;
        if (gamma != nullptr) v *= to_float(g.v[j]);
        if (beta != nullptr) v += to_float(b.v[j]);
        o.v[j] = from_float<T>(v);
      }
      reinterpret_cast<Vec<T>*>(out + base)[c] = o;
    }
  }
}

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace

void add_layernorm(const void* x, const void* residual, const void* bias, const void* gamma, const void* beta, void* out,
                   void* residual_out, std::int64_t rows, std::int64_t cols, float eps, DType dtype,
                   cudaStream_t stream) {
  detail::require(rows >= 0 && rows <= 0x7fffffff, kOp, "rows", "must be in [0, 2^31), got " + std::to_string(rows));
  detail::require(cols >= 1 && cols <= kMaxCols, kOp, "cols",
                  "must be in [1, " + std::to_string(kMaxCols) + "], got " + std::to_string(cols));
  detail::require(eps > 0.f, kOp, "eps", "must be > 0, got " + std::to_string(eps));
  if (rows == 0) return;
  detail::require(x != nullptr, kOp, "x", "must be a non-null device pointer");
  detail::require(out != nullptr, kOp, "out", "must be a non-null device pointer");
  detail::require(out != x && out != residual, kOp, "out", "must not alias x or residual");
  const std::size_t elem = dtype_size(dtype);
  for (const auto& [ptr, name] : {std::pair<const void*, const char*>{x, "x"}, {residual, "residual"}, {bias, "bias"},
                                  {gamma, "gamma"}, {beta, "beta"}, {out, "out"}, {residual_out, "residual_out"}}) {
    detail::require_element_aligned(ptr, elem, kOp, name);
  }
  const std::size_t smem = layernorm_detail::row_kernel_dynamic_smem_bytes(cols);
  const bool warp_rows = dtype != DType::kFloat32 && cols % 8 == 0 && cols <= kWarpRowMaxCols && aligned16(x) &&
                         aligned16(residual) && aligned16(bias) && aligned16(gamma) && aligned16(beta) &&
                         aligned16(out) && aligned16(residual_out);
  dispatch_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!std::is_same_v<T, float>) {
      if (warp_rows) {
        const unsigned grid = static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
        auto args = [&](auto kernel) {
          kernel<<<grid, kWarpsPerBlock * kWarpSize, 0, stream>>>(
              static_cast<const T*>(x), static_cast<const T*>(residual), static_cast<const T*>(bias),
              static_cast<const T*>(gamma), static_cast<const T*>(beta), static_cast<T*>(out),
              static_cast<T*>(residual_out), static_cast<int>(rows), static_cast<int>(cols), eps);
          FK_CHECK_LAUNCH();
        };
        // Vectors of 8 per lane: 1 for cols <= 256, ..., 4 for cols <= 1024.
        switch ((cols + 255) / 256) {
          case 1: args(add_layernorm_warp_kernel<T, 1>); break;
          case 2: args(add_layernorm_warp_kernel<T, 2>); break;
          case 3: args(add_layernorm_warp_kernel<T, 3>); break;
          default: args(add_layernorm_warp_kernel<T, 4>); break;
        }
        return;
      }
    }
    add_layernorm_kernel<T><<<static_cast<unsigned>(rows), kThreads, smem, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(residual), static_cast<const T*>(bias),
        static_cast<const T*>(gamma), static_cast<const T*>(beta), static_cast<T*>(out), static_cast<T*>(residual_out),
        static_cast<int>(cols), eps);
    FK_CHECK_LAUNCH();
  });
}

}  // namespace flashkernel
