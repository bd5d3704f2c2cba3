// add_layernorm: one CTA per row. The row's sum s = x + residual + bias is formed once, rounded to
// the tensor dtype (what residual_out stores), and kept in shared memory as fp32, so the mean and
// the variance passes and the normalize pass read on-chip data, not the inputs again. Two-pass
// variance (sum of (s - mean)^2) avoids the cancellation of E[s^2] - mean^2.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "common/arg_check.h"
#include "common/block_reduce.cuh"
#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "flashkernel/layernorm.h"

namespace flashkernel {
namespace {

constexpr const char* kOp = "add_layernorm";
constexpr int kThreads = 256;
// The fp32 row copy lives in dynamic shared memory; with the static reduction scratch the total
// must stay under the 48 KiB a launch gets without an opt-in, so rows are capped at 32 KiB.
constexpr std::int64_t kMaxCols = 8192;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    add_layernorm_kernel(const T* x, const T* residual, const T* __restrict__ bias,
                         const T* __restrict__ gamma, const T* __restrict__ beta, T* __restrict__ out, T* residual_out,
                         int cols, float eps) {
  extern __shared__ float srow[];
  __shared__ float scratch[kThreads / kWarpSize + 1];
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
  const std::size_t smem = static_cast<std::size_t>(cols) * sizeof(float);
  dispatch_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    add_layernorm_kernel<T><<<static_cast<unsigned>(rows), kThreads, smem, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(residual), static_cast<const T*>(bias),
        static_cast<const T*>(gamma), static_cast<const T*>(beta), static_cast<T*>(out), static_cast<T*>(residual_out),
        static_cast<int>(cols), eps);
    FK_CHECK_LAUNCH();
  });
}

}  // namespace flashkernel
