// Row-wise reduction over the last dimension of a row-major matrix. The number of threads that
// share a row follows the row length so that every thread has at least one 16-byte load to do:
//   * short rows (<= 32 vectors): a slice of kGroup = 4, 8, 16 or 32 lanes of a warp per row,
//     combined with a width-kGroup shuffle tree (no shared memory, no barrier);
//   * medium rows (<= 32 * kMaxWarpVecsPerLane vectors, 4096 fp16 / 2048 fp32): one warp per row;
//   * long rows: one 256-thread block per row, warp trees then a shared-memory combine.
// Each row is split into scalar head / aligned 16-byte body / scalar tail on its own, since a
// row's start is 16-byte aligned only when the base pointer and cols * sizeof(T) both are.
#include <cuda_runtime.h>

#include <algorithm>

#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/launch.h"
#include "reduce/reduce_common.cuh"

namespace flashkernel {
namespace {

using reduce_detail::accumulate;
using reduce_detail::head_elements;

constexpr int kThreads = 256;
// A warp keeps a row up to this many vector loads per lane (all issued before the first add);
// longer rows get a whole block so a few long rows still spread over many SMs. 16, not 8: with
// 8, 4096x4096 fp16 went to block-per-row (2 loads per thread, a barrier per row) and read only
// 1.7 TB/s on H100.
constexpr int kMaxWarpVecsPerLane = 16;
// Grid cap (rows are visited grid-stride beyond it): plenty of resident blocks on any GPU.
constexpr std::int64_t kMaxGrid = 1 << 20;

// Combines one row's elements owned by `lane` of `width` cooperating threads (head, body, tail).
template <typename T, int kUnrollHint, typename Combine>
__device__ __forceinline__ float row_partial(const T* row, std::int64_t cols, int lane, int width, Combine combine) {
  constexpr int kVec = vec_size<T>();
  const std::int64_t head = head_elements(row, cols);
  const std::int64_t num_vecs = (cols - head) / kVec;
  const T* body = row + head;
  float acc = Combine::identity();
  for (std::int64_t j = lane; j < head; j += width) acc = combine(acc, to_float(row[j]));
#pragma unroll kUnrollHint
  for (std::int64_t v = lane; v < num_vecs; v += width) acc = accumulate(acc, load_vec_stream(body + v * kVec), combine);
  const std::int64_t tail_start = head + num_vecs * kVec;
  for (std::int64_t j = tail_start + lane; j < cols; j += width) acc = combine(acc, to_float(row[j]));
  return acc;
}

// kGroup lanes per row, kThreads / kGroup rows per block per step. The loop bound is the same for
// the whole block (rows are visited in block-sized steps) so every lane reaches every shuffle.
template <typename T, typename Combine, int kGroup>
__global__ void __launch_bounds__(kThreads)
    reduce_rows_warp_kernel(const T* __restrict__ x, T* __restrict__ out, std::int64_t rows, std::int64_t cols) {
  constexpr int kRowsPerBlock = kThreads / kGroup;
  const Combine combine;
  const int group = threadIdx.x / kGroup;
  const int lane = threadIdx.x % kGroup;
  for (std::int64_t base = std::int64_t(blockIdx.x) * kRowsPerBlock; base < rows;
       base += std::int64_t(gridDim.x) * kRowsPerBlock) {
    const std::int64_t r = base + group;
    float acc = Combine::identity();
    if (r < rows) acc = row_partial<T, kMaxWarpVecsPerLane>(x + r * cols, cols, lane, kGroup, combine);
    acc = warp_reduce<kGroup>(acc, combine);
    if (lane == 0 && r < rows) out[r] = from_float<T>(acc);
  }
}

template <typename T, typename Combine>
__global__ void __launch_bounds__(kThreads)
    reduce_rows_block_kernel(const T* __restrict__ x, T* __restrict__ out, std::int64_t rows, std::int64_t cols) {
  const Combine combine;
  __shared__ float scratch[kThreads / kWarpSize];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float acc = row_partial<T, 4>(x + r * cols, cols, threadIdx.x, kThreads, combine);
    acc = block_reduce<kThreads>(acc, combine, scratch);  // starts with a barrier: scratch is free
    if (threadIdx.x == 0) out[r] = from_float<T>(acc);
  }
}

template <typename T, typename Combine, int kGroup>
void launch_warp(const T* x, T* out, std::int64_t rows, std::int64_t cols, cudaStream_t stream) {
  const std::int64_t grid = std::min(detail::ceil_div(rows, kThreads / kGroup), kMaxGrid);
  reduce_rows_warp_kernel<T, Combine, kGroup><<<unsigned(grid), kThreads, 0, stream>>>(x, out, rows, cols);
  FK_CHECK_LAUNCH();
}

}  // namespace

void reduce_rows(const void* x, void* out, std::int64_t rows, std::int64_t cols, DType dtype, ReduceOp op,
                 cudaStream_t stream) {
  constexpr const char* kOp = "reduce_rows";
  detail::require(rows >= 0, kOp, "rows", "must be >= 0, got " + std::to_string(rows));
  detail::require(cols >= 0, kOp, "cols", "must be >= 0, got " + std::to_string(cols));
  detail::require_device_pointer(x, rows * cols, kOp, "x");
  detail::require_device_pointer(out, rows, kOp, "out");
  detail::require(is_aligned(x, dtype_size(dtype)), kOp, "x", "must be aligned to its element size");
  detail::require(is_aligned(out, dtype_size(dtype)), kOp, "out", "must be aligned to its element size");
  detail::require(op != ReduceOp::kMax || cols > 0 || rows == 0, kOp, "cols",
                  "is 0: the max of an empty row is undefined (max has no identity element)");
  reduce_detail::dispatch_reduce_op(op, kOp, [](auto) {});  // rejects an unknown op before any CUDA call
  dispatch_dtype(dtype, kOp, [](auto) {});  // and a storage-only dtype (float8) before the empty-input memset
  if (rows == 0) return;
  if (cols == 0) {
    FK_CUDA_CHECK(cudaMemsetAsync(out, 0, rows * dtype_size(dtype), stream));  // +0.0 in every dtype
    return;
  }
  dispatch_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = static_cast<const T*>(x);
    T* po = static_cast<T*>(out);
    // 16-byte vectors in a row (a misaligned row's head and tail scalars go to the same lanes).
    const std::int64_t vecs = detail::ceil_div(cols, vec_size<T>());
    reduce_detail::dispatch_reduce_op(op, kOp, [&](auto combine) {
      using Combine = decltype(combine);
      if (vecs <= 4) {
        launch_warp<T, Combine, 4>(px, po, rows, cols, stream);
      } else if (vecs <= 8) {
        launch_warp<T, Combine, 8>(px, po, rows, cols, stream);
      } else if (vecs <= 16) {
        launch_warp<T, Combine, 16>(px, po, rows, cols, stream);
      } else if (vecs <= kWarpSize * kMaxWarpVecsPerLane) {
        launch_warp<T, Combine, kWarpSize>(px, po, rows, cols, stream);
      } else {
        const std::int64_t grid = std::min(rows, kMaxGrid);
        reduce_rows_block_kernel<T, Combine><<<unsigned(grid), kThreads, 0, stream>>>(px, po, rows, cols);
        FK_CHECK_LAUNCH();
      }
    });
  });
}

}  // namespace flashkernel
