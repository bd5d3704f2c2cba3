// Full reduction (whole array -> one value) in one launch: a grid-stride loop of 16-byte loads,
// a warp-shuffle + shared-memory block reduction, one fp32 partial per block, and the last block
// to finish (atomic ticket) combining the partials in block order. Partials are combined in a
// fixed order, never with float atomics, so the result is bit-identical run to run.
#include <cuda_runtime.h>


#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/launch.h"
#include "reduce/reduce_common.cuh"

namespace flashkernel {
namespace {

using reduce_detail::accumulate;
using reduce_detail::head_elements;

constexpr int kThreads = 512;
// Independent 16-byte loads each thread issues before using any of them: with a full SM
// (2048 threads) that is 128 KiB in flight per SM, several times what HBM latency x bandwidth
// needs, so the loop is bandwidth- not latency-bound.
constexpr int kUnroll = 4;
// Up to this many grid-stride iterations one block does alone: below it, one block (no partials,
// no memset, no atomics) beats paying a second pass for a tiny array.
constexpr int kSingleBlockMaxIters = 2;

template <typename T, typename Combine>
__global__ void __launch_bounds__(kThreads)
    reduce_full_kernel(const T* __restrict__ x, std::int64_t n, std::int64_t head, T* __restrict__ out,
                       float* __restrict__ partials, unsigned* __restrict__ done_count) {
  constexpr int kVec = vec_size<T>();
  static_assert(kThreads >= 2 * kVec, "the head/tail scalars use two ranges of kVec threads");
  const Combine combine;
  float acc = Combine::identity();

  // Body: aligned vectors starting after the scalar head, kUnroll loads per thread in flight.
  const T* body = x + head;
  const std::int64_t num_vecs = (n - head) / kVec;
  const std::int64_t stride = std::int64_t(gridDim.x) * kThreads;
  std::int64_t i = std::int64_t(blockIdx.x) * kThreads + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < num_vecs; i += kUnroll * stride) {
    Vec<T> v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = load_vec_stream(body + (i + u * stride) * kVec);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc = accumulate(acc, v[u], combine);
  }
  for (; i < num_vecs; i += stride) acc = accumulate(acc, load_vec_stream(body + i * kVec), combine);

  // Scalar head (< kVec elements before the first 16-byte boundary) and tail (< kVec after the
  // last full vector): block 0, threads [0, head) and [kVec, kVec + tail).
  if (blockIdx.x == 0) {
    const std::int64_t tail_start = head + num_vecs * kVec;
    const int t = threadIdx.x;
    if (t < head) {
      acc = combine(acc, to_float(x[t]));
    } else if (t >= kVec && t - kVec < n - tail_start) {
      acc = combine(acc, to_float(x[tail_start + t - kVec]));
    }
  }

  __shared__ float scratch[kThreads / kWarpSize];
  __shared__ bool is_last_block;
  const float block_total = block_reduce<kThreads>(acc, combine, scratch);
  if (gridDim.x == 1) {
    if (threadIdx.x == 0) *out = from_float<T>(block_total);
    return;
  }
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = block_total;
    // Publish the partial device-wide before taking a ticket, so the block that draws the last
    // ticket sees every partial.
    __threadfence();
    is_last_block = atomicAdd(done_count, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!is_last_block) return;
  __threadfence();
  float v = Combine::identity();
  // __ldcg: read from L2, where the other blocks' partials are, not from a stale L1 line.
  for (unsigned j = threadIdx.x; j < gridDim.x; j += kThreads) v = combine(v, __ldcg(partials + j));
  const float total = block_reduce<kThreads>(v, combine, scratch);
  if (threadIdx.x == 0) *out = from_float<T>(total);
}

// Resident blocks per SM of one kernel on one device, cached (the occupancy query is not free and
// the answer never changes). The grid is exactly one full wave: every block starts at once, none
// waits for a second wave that would leave most SMs idle at the end.
template <typename Kernel>
int blocks_per_sm(Kernel kernel) {
  static detail::PerDeviceCache cache;
  return cache.get([&](int) {
    int blocks = 0;
    FK_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kThreads, 0));
    return std::max(blocks, 1);
  });
}

// The grid for n elements of T: one block for small arrays, else one full wave capped by work.
template <typename T>
unsigned full_grid(std::int64_t n) {
  const std::int64_t vecs = n / vec_size<T>();
  const std::int64_t per_block_iter = std::int64_t(kThreads) * kUnroll;
  if (vecs <= kSingleBlockMaxIters * per_block_iter) return 1;
  // Every reduce_full_kernel instantiation has the same register/shared-memory footprint class;
  // the sum kernel of T stands for both ops.
  const std::int64_t wave = std::int64_t(detail::current_sm_count()) *
                            blocks_per_sm(reduce_full_kernel<T, SumCombine>);
  return static_cast<unsigned>(std::min(wave, detail::ceil_div(vecs, per_block_iter)));
}

// Workspace layout: [done counter (16 bytes, keeps the partials aligned)][grid fp32 partials].
constexpr std::size_t kCounterBytes = 16;

std::size_t workspace_for_grid(unsigned grid) { return grid <= 1 ? 0 : kCounterBytes + grid * sizeof(float); }

}  // namespace

std::size_t reduce_workspace_bytes(std::int64_t n) {
  if (n <= 0) return 0;
  // An upper bound on full_grid<T>(n) for every T, without the per-dtype occupancy queries
  // (this runs on every call of the torch op): float needs the most blocks for a given n, since
  // 2-byte types pack twice the elements per vector, and no GPU keeps more than 2048 threads
  // resident per SM.
  const std::int64_t vecs = n / vec_size<float>();
  const std::int64_t per_block_iter = std::int64_t(kThreads) * kUnroll;
  if (vecs <= kSingleBlockMaxIters * per_block_iter) return 0;
  const std::int64_t max_wave = std::int64_t(detail::current_sm_count()) * (2048 / kThreads);
  return workspace_for_grid(static_cast<unsigned>(std::min(max_wave, detail::ceil_div(vecs, per_block_iter))));
}

void reduce_full(const void* x, void* out, std::int64_t n, DType dtype, ReduceOp op, void* workspace,
                 std::size_t workspace_bytes, cudaStream_t stream) {
  constexpr const char* kOp = "reduce_full";
  detail::require(n >= 0, kOp, "n", "must be >= 0, got " + std::to_string(n));
  detail::require_device_pointer(x, n, kOp, "x");
  detail::require(out != nullptr, kOp, "out", "must be a non-null device pointer");
  detail::require(is_aligned(x, dtype_size(dtype)), kOp, "x", "must be aligned to its element size");
  detail::require(is_aligned(out, dtype_size(dtype)), kOp, "out", "must be aligned to its element size");
  // The completion counter (an atomic unsigned) and the fp32 partials.
  detail::require(is_aligned(workspace, 4), kOp, "workspace", "must be 4-byte aligned");
  detail::require(op != ReduceOp::kMax || n > 0, kOp, "n",
                  "is 0: the max of an empty array is undefined (max has no identity element)");
  reduce_detail::dispatch_reduce_op(op, kOp, [](auto) {});  // rejects an unknown op before any CUDA call
  dispatch_dtype(dtype, kOp, [](auto) {});  // and a storage-only dtype (float8) before the empty-input memset
  if (n == 0) {
    // Sum of nothing: all-zero bytes are +0.0 in fp32, fp16 and bf16.
    FK_CUDA_CHECK(cudaMemsetAsync(out, 0, dtype_size(dtype), stream));
    return;
  }
  dispatch_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = static_cast<const T*>(x);
    const unsigned grid = full_grid<T>(n);
    const std::size_t needed = workspace_for_grid(grid);
    detail::require(workspace_bytes >= needed && (needed == 0 || workspace != nullptr), kOp, "workspace_bytes",
                    "is " + std::to_string(workspace_bytes) + " but reduce_workspace_bytes(n) = " +
                        std::to_string(needed) + " are needed");
    unsigned* done_count = static_cast<unsigned*>(workspace);
    float* partials = needed ? reinterpret_cast<float*>(static_cast<char*>(workspace) + kCounterBytes) : nullptr;
    if (needed) FK_CUDA_CHECK(cudaMemsetAsync(done_count, 0, sizeof(unsigned), stream));
    const std::int64_t head = head_elements(px, n);
    reduce_detail::dispatch_reduce_op(op, kOp, [&](auto combine) {
      using Combine = decltype(combine);
      reduce_full_kernel<T, Combine><<<grid, kThreads, 0, stream>>>(px, n, head, static_cast<T*>(out), partials,
                                                                    done_count);
      FK_CHECK_LAUNCH();
    });
  });
}

}  // namespace flashkernel
