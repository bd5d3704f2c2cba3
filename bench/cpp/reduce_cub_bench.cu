// CUB baseline for the reduce benchmark: cub::DeviceReduce::Reduce for whole arrays and
// cub::DeviceSegmentedReduce::Reduce for rows, fp32 accumulation for every input type (the same
// contract as flashkernel's reduce). Prints CSV rows op,impl,dtype,config,median_ms,flops,bytes
// with the same configs as python/flashkernel/bench/ops/reduce.py so rows pair up by config.
//
// It also times flashkernel's C++ API the same way (impl flashkernel_cuda_cpp): no Python or
// torch dispatch on the host, workspace allocated once as CUB's temp storage is, so the pair
// (cub, flashkernel_cuda_cpp) compares GPU work where the Python rows are host-bound.
//
//   reduce_cub_bench [--quick]
#include <cub/device/device_reduce.cuh>
#include <cub/device/device_segmented_reduce.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "bench_util.cuh"
#include "flashkernel/reduce.h"

namespace {

struct SumF {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct MaxF {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Median of `runs` event-timed calls, cycling through the input sets so that each call reads
// from HBM, not from L2 (the sets together exceed twice the L2 size).
template <typename Fn>
double median_ms(int num_sets, Fn&& fn) {
  for (int i = 0; i < 3; ++i) fn(i % num_sets);
  FK_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  FK_CUDA_CHECK(cudaEventCreate(&a));
  FK_CUDA_CHECK(cudaEventCreate(&b));
  FK_CUDA_CHECK(cudaEventRecord(a));
  fn(0);
  FK_CUDA_CHECK(cudaEventRecord(b));
  FK_CUDA_CHECK(cudaEventSynchronize(b));
  float est = 0;
  FK_CUDA_CHECK(cudaEventElapsedTime(&est, a, b));
  const int runs = std::clamp(int(250.0 / std::max(est, 1e-3f)), 20, 200);
  std::vector<float> times(runs);
  for (int r = 0; r < runs; ++r) {
    FK_CUDA_CHECK(cudaEventRecord(a));
    fn(r % num_sets);
    FK_CUDA_CHECK(cudaEventRecord(b));
    FK_CUDA_CHECK(cudaEventSynchronize(b));
    FK_CUDA_CHECK(cudaEventElapsedTime(&times[r], a, b));
  }
  FK_CUDA_CHECK(cudaEventDestroy(a));
  FK_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(times.begin(), times.end());
  return times[runs / 2];
}

int rotation_count(std::size_t bytes_per_set) {
  int device = 0, l2 = 0;
  FK_CUDA_CHECK(cudaGetDevice(&device));
  FK_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
  return int(std::clamp<std::size_t>((2 * std::size_t(l2) + bytes_per_set - 1) / bytes_per_set, 1, 64));
}

template <typename T>
const char* name_of() {
  return std::is_same_v<T, float> ? "float32" : "float16";
}

// Allocates the rotated input sets and fills them.
template <typename T>
std::vector<T*> make_sets(std::int64_t n) {
  std::vector<T*> sets(rotation_count(n * sizeof(T)));
  for (std::size_t s = 0; s < sets.size(); ++s) {
    FK_CUDA_CHECK(cudaMalloc(&sets[s], n * sizeof(T)));
    sweep::fill(sets[s], n, std::uint32_t(s * 7919 + 1));
    FK_CHECK_LAUNCH();
  }
  return sets;
}

template <typename T>
void free_sets(std::vector<T*>& sets) {
  for (T* p : sets) FK_CUDA_CHECK(cudaFree(p));
}

void print_row(const char* dtype, const std::string& config, double ms, double bytes, const char* impl = "cub") {
  std::printf("reduce,%s,%s,%s,%.6f,,%.0f\n", impl, dtype, config.c_str(), ms, bytes);
  std::fflush(stdout);
}

template <typename T, typename Op>
double time_full(const std::vector<T*>& sets, std::int64_t n, Op op, float init, float* out) {
  std::size_t temp_bytes = 0;
  FK_CUDA_CHECK(cub::DeviceReduce::Reduce(nullptr, temp_bytes, sets[0], out, n, op, init));
  void* temp = nullptr;
  FK_CUDA_CHECK(cudaMalloc(&temp, std::max<std::size_t>(temp_bytes, 1)));
  const double ms = median_ms(int(sets.size()), [&](int s) {
    FK_CUDA_CHECK(cub::DeviceReduce::Reduce(temp, temp_bytes, sets[s], out, n, op, init));
  });
  FK_CUDA_CHECK(cudaFree(temp));
  return ms;
}

template <typename T>
constexpr flashkernel::DType fk_dtype() {
  return std::is_same_v<T, float> ? flashkernel::DType::kFloat32 : flashkernel::DType::kFloat16;
}

template <typename T>
double time_fk_full(const std::vector<T*>& sets, std::int64_t n, flashkernel::ReduceOp op, float* out) {
  const std::size_t ws_bytes = flashkernel::reduce_workspace_bytes(n);
  void* ws = nullptr;
  FK_CUDA_CHECK(cudaMalloc(&ws, std::max<std::size_t>(ws_bytes, 1)));
  // `out` holds a float; a T result fits in it.
  const double ms = median_ms(int(sets.size()),
                              [&](int s) { flashkernel::reduce_full(sets[s], out, n, fk_dtype<T>(), op, ws, ws_bytes); });
  FK_CUDA_CHECK(cudaFree(ws));
  return ms;
}

template <typename T>
void bench_full(std::int64_t n, float* out) {
  auto sets = make_sets<T>(n);
  const std::string config = "n=" + std::to_string(n);
  const double bytes = double(n) * sizeof(T);
  print_row(name_of<T>(), config + " op=sum", time_full(sets, n, SumF{}, 0.f, out), bytes);
  print_row(name_of<T>(), config + " op=max", time_full(sets, n, MaxF{}, -INFINITY, out), bytes);
  print_row(name_of<T>(), config + " op=sum", time_fk_full(sets, n, flashkernel::ReduceOp::kSum, out), bytes,
            "flashkernel_cuda_cpp");
  print_row(name_of<T>(), config + " op=max", time_fk_full(sets, n, flashkernel::ReduceOp::kMax, out), bytes,
            "flashkernel_cuda_cpp");
  free_sets(sets);
}

template <typename T, typename Op>
double time_rows(const std::vector<T*>& sets, std::int64_t rows, const std::int64_t* offsets, Op op, float init,
                 float* out) {
  std::size_t temp_bytes = 0;
  FK_CUDA_CHECK(cub::DeviceSegmentedReduce::Reduce(nullptr, temp_bytes, sets[0], out, rows, offsets, offsets + 1, op,
                                                   init));
  void* temp = nullptr;
  FK_CUDA_CHECK(cudaMalloc(&temp, std::max<std::size_t>(temp_bytes, 1)));
  const double ms = median_ms(int(sets.size()), [&](int s) {
    FK_CUDA_CHECK(cub::DeviceSegmentedReduce::Reduce(temp, temp_bytes, sets[s], out, rows, offsets, offsets + 1, op,
                                                     init));
  });
  FK_CUDA_CHECK(cudaFree(temp));
  return ms;
}

void bench_rows(std::int64_t rows, std::int64_t cols) {
  using T = __half;
  auto sets = make_sets<T>(rows * cols);
  std::vector<std::int64_t> host_offsets(rows + 1);
  for (std::int64_t r = 0; r <= rows; ++r) host_offsets[r] = r * cols;
  std::int64_t* offsets = nullptr;
  float* out = nullptr;
  FK_CUDA_CHECK(cudaMalloc(&offsets, (rows + 1) * sizeof(std::int64_t)));
  FK_CUDA_CHECK(cudaMalloc(&out, rows * sizeof(float)));
  FK_CUDA_CHECK(cudaMemcpy(offsets, host_offsets.data(), (rows + 1) * sizeof(std::int64_t), cudaMemcpyHostToDevice));
  const std::string config = "rows=" + std::to_string(rows) + " cols=" + std::to_string(cols);
  const double bytes = double(rows) * cols * sizeof(T);
  print_row("float16", config + " op=sum", time_rows(sets, rows, offsets, SumF{}, 0.f, out), bytes);
  print_row("float16", config + " op=max", time_rows(sets, rows, offsets, MaxF{}, -INFINITY, out), bytes);
  for (auto op : {flashkernel::ReduceOp::kSum, flashkernel::ReduceOp::kMax}) {
    // `out` holds rows floats: room for rows halves.
    const double ms = median_ms(int(sets.size()), [&](int s) {
      flashkernel::reduce_rows(sets[s], out, rows, cols, flashkernel::DType::kFloat16, op);
    });
    print_row("float16", config + (op == flashkernel::ReduceOp::kSum ? " op=sum" : " op=max"), ms, bytes,
              "flashkernel_cuda_cpp");
  }
  FK_CUDA_CHECK(cudaFree(offsets));
  FK_CUDA_CHECK(cudaFree(out));
  free_sets(sets);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  std::vector<std::int64_t> sizes;
  if (quick) {
    sizes = {1000000, 100000000};
  } else {
    for (std::int64_t n = 1000; n <= 1000000000; n *= 10) sizes.push_back(n);
  }
  try {
    float* out = nullptr;
    FK_CUDA_CHECK(cudaMalloc(&out, sizeof(float)));
    std::printf("op,impl,dtype,config,median_ms,flops,bytes\n");
    for (std::int64_t n : sizes) bench_full<float>(n, out);
    for (std::int64_t n : sizes) bench_full<__half>(n, out);
    FK_CUDA_CHECK(cudaFree(out));
    const std::vector<std::pair<std::int64_t, std::int64_t>> shapes = {{512, 2048}, {4096, 4096}, {65536, 128}};
    for (std::size_t i = 0; i < (quick ? 1 : shapes.size()); ++i) bench_rows(shapes[i].first, shapes[i].second);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "reduce_cub_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
