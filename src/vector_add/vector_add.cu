// vector_add kernels: 16-byte vectorized tiles with a scalar tail, and a scalar fallback for
// arrays that are not 16-byte aligned.
#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "common/launch.h"
#include "common/vector_io.cuh"
#include "flashkernel/vector_add.h"

namespace flashkernel {
namespace {

constexpr int kThreads = 256;
// Independent 16-byte loads each thread keeps in flight per iteration (hides HBM latency).
constexpr int kUnroll = 4;

template <typename T>
__device__ __forceinline__ T add(T x, T y) {
  return from_float<T>(to_float(x) + to_float(y));
}

// Each block owns a tile of kThreads * kUnroll vectors; thread t handles vectors t, t + kThreads,
// ... of the tile, so every load instruction is coalesced across the warp and each thread has
// kUnroll independent loads in flight. One pass, no grid-stride loop: at HBM sizes the launch
// has enough blocks to fill every SM many times over.
template <typename T>
__global__ void __launch_bounds__(kThreads) vector_add_vectorized_kernel(const T* __restrict__ a,
                                                                        const T* __restrict__ b, T* out,
                                                                        std::int64_t n) {
  constexpr int kVec = vec_size<T>();
  const std::int64_t num_vecs = n / kVec;
  const std::int64_t tile_start = std::int64_t(blockIdx.x) * kThreads * kUnroll + threadIdx.x;
  Vec<T> va[kUnroll], vb[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    std::int64_t v = tile_start + u * kThreads;
    if (v < num_vecs) {
      va[u] = load_vec(a + v * kVec);
      vb[u] = load_vec(b + v * kVec);
    }
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    std::int64_t v = tile_start + u * kThreads;
    if (v < num_vecs) {
      Vec<T> r;
#pragma unroll
      for (int k = 0; k < kVec; ++k) r.v[k] = add(va[u].v[k], vb[u].v[k]);
      store_vec(out + v * kVec, r);
    }
  }
  // Scalar tail: the last n % kVec elements, one per thread of the last block.
  const std::int64_t tail_start = num_vecs * kVec;
  if (blockIdx.x == gridDim.x - 1 && threadIdx.x < n - tail_start) {
    std::int64_t j = tail_start + threadIdx.x;
    out[j] = add(a[j], b[j]);
  }
}

template <typename T>
__global__ void vector_add_scalar_kernel(const T* a, const T* b, T* out, std::int64_t n) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = add(a[i], b[i]);
  }
}

}  // namespace

void vector_add(const void* a, const void* b, void* out, std::int64_t n, DType dtype, cudaStream_t stream) {
  constexpr const char* kOp = "vector_add";
  detail::require(n >= 0, kOp, "n", "must be >= 0, got " + std::to_string(n));
  detail::require_device_pointer(a, n, kOp, "a");
  detail::require_device_pointer(b, n, kOp, "b");
  detail::require_device_pointer(out, n, kOp, "out");
  detail::require_element_aligned(a, dtype_size(dtype), kOp, "a");
  detail::require_element_aligned(b, dtype_size(dtype), kOp, "b");
  detail::require_element_aligned(out, dtype_size(dtype), kOp, "out");
  dispatch_dtype(dtype, kOp, [](auto) {});  // a storage-only dtype (float8) is refused even when n == 0
  if (n == 0) return;
  dispatch_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    T* po = static_cast<T*>(out);
    if (is_aligned(pa) && is_aligned(pb) && is_aligned(po)) {
      // At least one block, so the scalar tail runs even when n < one vector.
      std::int64_t blocks = std::max<std::int64_t>(1, detail::ceil_div(n / vec_size<T>(), kThreads * kUnroll));
      unsigned grid = static_cast<unsigned>(blocks);
      vector_add_vectorized_kernel<T><<<grid, kThreads, 0, stream>>>(pa, pb, po, n);
    } else {
      unsigned grid = detail::grid_for(n, kThreads, detail::current_sm_count(), 8);
      vector_add_scalar_kernel<T><<<grid, kThreads, 0, stream>>>(pa, pb, po, n);
    }
    FK_CHECK_LAUNCH();
  });
}

}  // namespace flashkernel
