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
#include "layernorm/add_norm_vector.cuh"

namespace flashkernel {
namespace {

using layernorm_detail::kMaxCols;
using layernorm_detail::kThreads;
using layernorm_detail::launch_vector_kernel;
using layernorm_detail::normalize;
using layernorm_detail::NormRows;
using layernorm_detail::residual_sum;

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

bool aligned16(const void* p) { return p == nullptr || is_aligned(p); }

// The one implementation behind both public entry points (op: the name errors carry).
void add_norm(const char* op, bool rms, const void* x, const void* residual, const void* bias, const void* gamma,
              const void* beta, void* out, void* residual_out, std::int64_t rows, std::int64_t cols, float eps,
              DType dtype, cudaStream_t stream) {
  detail::require(rows >= 0 && rows <= 0x7fffffff, op, "rows", "must be in [0, 2^31), got " + std::to_string(rows));
  detail::require(cols >= 1 && cols <= kMaxCols, op, "cols",
                  "must be in [1, " + std::to_string(kMaxCols) + "], got " + std::to_string(cols));
  detail::require(eps > 0.f, op, "eps", "must be > 0, got " + std::to_string(eps));
  dispatch_dtype(dtype, op, [](auto) {});  // a storage-only dtype (float8) is refused even when rows == 0
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
