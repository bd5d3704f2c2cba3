// Fused variant (angles computed in the kernel from inv_freq, no table) and the table builder.
#include <cmath>
#include <string>

#include "common/arg_check.h"
#include "rope/rope_kernel.cuh"

namespace flashkernel {
namespace {

template <typename T>
__global__ void rope_cache_kernel(T* __restrict__ cos, T* __restrict__ sin, std::int64_t total, std::int64_t half,
                                  const __grid_constant__ rope_detail::InvFreq inv) {
  const std::int64_t idx = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= total) return;
  const std::int64_t pos = idx / half;
  const std::int64_t i = idx - pos * half;
  float s, c;
  // Same expression as the fused kernel, so table and fused variants see identical angles.
  sincosf(static_cast<float>(pos) * inv.v[i], &s, &c);
  cos[idx] = from_float<T>(c);
  sin[idx] = from_float<T>(s);
}

void check_base(const char* op, double base) {
  detail::require(std::isfinite(base) && base > 0.0, op, "base", "must be a finite number > 0, got " + std::to_string(base));
}

}  // namespace

void rope_fused(const RopeTensor& q, const RopeTensor& k, const RopeShape& shape, const RopePositions& positions,
                double base, RopeStyle style, DType dtype, cudaStream_t stream) {
  constexpr const char* kOp = "rope_fused";
  check_base(kOp, base);
  if (!rope_detail::check_common(kOp, q, k, shape, style, positions, dtype)) return;
  rope_detail::Params p = rope_detail::make_params(q, k, shape, positions);
  const rope_detail::InvFreq inv = rope_detail::inv_freq(base, shape.rotary_dim);
  const bool inplace = q.in == q.out && k.in == k.out;
  dispatch_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    rope_detail::launch<T, float, true>(p, inv, style, inplace, stream);
  });
}

void rope_cache(void* cos, void* sin, std::int64_t max_positions, std::int64_t rotary_dim, double base, DType dtype,
                cudaStream_t stream) {
  constexpr const char* kOp = "rope_cache";
  detail::require(max_positions >= 0, kOp, "max_positions", "must be >= 0, got " + std::to_string(max_positions));
  detail::require(rotary_dim >= 2 && rotary_dim % 2 == 0, kOp, "rotary_dim",
                  "must be even and >= 2, got " + std::to_string(rotary_dim));
  detail::require(rotary_dim <= kRopeMaxRotaryDim, kOp, "rotary_dim",
                  "must be <= " + std::to_string(kRopeMaxRotaryDim) + ", got " + std::to_string(rotary_dim));
  check_base(kOp, base);
  const std::int64_t half = rotary_dim / 2;
  const std::int64_t total = max_positions * half;
  detail::require_device_pointer(cos, total, kOp, "cos");
  detail::require_device_pointer(sin, total, kOp, "sin");
  detail::require_element_aligned(cos, dtype_size(dtype), kOp, "cos");
  detail::require_element_aligned(sin, dtype_size(dtype), kOp, "sin");
  if (total == 0) return;
  const rope_detail::InvFreq inv = rope_detail::inv_freq(base, rotary_dim);
  constexpr int kThreads = 256;
  const auto blocks = static_cast<unsigned>(detail::ceil_div(total, kThreads));
  dispatch_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    rope_cache_kernel<T><<<blocks, kThreads, 0, stream>>>(static_cast<T*>(cos), static_cast<T*>(sin), total, half, inv);
    FK_CHECK_LAUNCH();
  });
}

}  // namespace flashkernel
