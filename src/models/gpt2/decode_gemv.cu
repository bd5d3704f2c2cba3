// Decode-step projections (M <= 8 token rows): out[m, n] = x[m, :] . w[n, :] (+ bias[n]).
// One warp per output column streams that weight row once with 16-byte loads and applies it to
// every token row, so each weight byte is read from HBM once per step whatever the batch. Replaces
// cuBLAS in the decode graph, where its M = 1..8 kernels (plus a split-K reduce) cost 4-6 us each
// and the QKV output then needed a separate bias + head-split kernel: here the bias is added and
// q, k, v are written straight to their own buffers in the same pass.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/block_reduce.cuh"
#include "common/cuda_check.h"
#include "common/dependent_launch.cuh"
#include "common/dtype_traits.cuh"
#include "common/vector_io.cuh"
#include "models/gpt2/kernels.cuh"

namespace flashkernel::models::gpt2_detail {
namespace {

constexpr int kWarps = 4;

template <typename T, int kMaxM>
__global__ void __launch_bounds__(kWarps * kWarpSize)
    decode_gemv_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias, T* __restrict__ out,
                       int m, int n, int k, T* __restrict__ q, T* __restrict__ kk, T* __restrict__ v, int split) {
  static_assert(vec_size<T>() == 8, "16-bit elements: 8 per 16-byte vector");
  const int col = blockIdx.x * kWarps + threadIdx.x / kWarpSize;
  if (col >= n) return;
  const int lane = threadIdx.x % kWarpSize;
  // The weights are constant: while the previous kernel of the step finishes (dependent launch),
  // this warp's row is already on its way to L2.
  pdl::prefetch_l2(w + std::int64_t(col) * k, std::int64_t(k) * sizeof(T), lane, kWarpSize);
  pdl::wait_for_prior_grid();  // x is ready after this
  pdl::allow_dependents();
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
  const float b = bias != nullptr ? to_float(bias[col]) : 0.f;
#pragma unroll
  for (int r = 0; r < kMaxM; ++r) {
    if (r < m) {
      const float s = warp_reduce(acc[r], SumCombine{});
      if (lane == 0) {
        if (split > 0) {
          // QKV: column col of [q | k | v], each [m, split].
          const int part = col / split, c = col - part * split;
          T* dst = part == 0 ? q : (part == 1 ? kk : v);
          dst[std::int64_t(r) * split + c] = from_float<T>(s + b);
        } else {
          out[std::int64_t(r) * n + col] = from_float<T>(s + b);
        }
      }
    }
  }
}

template <typename T, int kMaxM>
void launch(const void* x, const void* w, const void* bias, void* out, std::int64_t m, std::int64_t n, std::int64_t k,
            void* q, void* kk, void* v, std::int64_t split, cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>((n + kWarps - 1) / kWarps);
  pdl::launch(decode_gemv_kernel<T, kMaxM>, grid, dim3(kWarps * kWarpSize), 0, stream, static_cast<const T*>(x),
              static_cast<const T*>(w), static_cast<const T*>(bias), static_cast<T*>(out), static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), static_cast<T*>(q), static_cast<T*>(kk), static_cast<T*>(v),
              static_cast<int>(split));
  FK_CHECK_LAUNCH();
}

}  // namespace

bool decode_gemv_supported(std::int64_t m, std::int64_t k) { return m >= 1 && m <= kDecodeGemvMaxM && k % 8 == 0; }

void decode_gemv(const void* x, const void* w, const void* bias, void* out, std::int64_t m, std::int64_t n,
                 std::int64_t k, DType dtype, void* q, void* kk, void* v, std::int64_t split, cudaStream_t stream) {
  if (m == 0) return;
  dispatch_half_dtype(dtype, "gpt2", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (m == 1) {
      launch<T, 1>(x, w, bias, out, m, n, k, q, kk, v, split, stream);
    } else if (m <= 4) {
      launch<T, 4>(x, w, bias, out, m, n, k, q, kk, v, split, stream);
    } else {
      launch<T, 8>(x, w, bias, out, m, n, k, q, kk, v, split, stream);
    }
  });
}

}  // namespace flashkernel::models::gpt2_detail
