// What the C++ benchmarks share: inputs from an index hash (no host transfer of gigabytes) and,
// for the kernel-variant sweeps, a CUDA-event timer over rotating input sets and the start and end
// of their main().
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"

namespace sweep {

// Pseudo-random values in [-scale, scale) from the element index.
template <typename T>
__global__ void fill_kernel(T* x, std::int64_t n, std::uint32_t seed, float scale) {
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = std::uint32_t(i) * 2654435761u ^ std::uint32_t(i >> 32) ^ seed;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    x[i] = flashkernel::from_float<T>((float(h) * (2.0f / 4294967296.0f) - 1.0f) * scale);
  }
}

template <typename T>
void fill(T* x, std::int64_t n, std::uint32_t seed, float scale = 1.f) {
  fill_kernel<<<1024, 256>>>(x, n, seed, scale);
  FK_CUDA_CHECK(cudaGetLastError());
}

// Input sets to rotate through so that together they exceed 2x L2 (each call reads HBM).
inline int rotation_sets(std::int64_t bytes_per_set, std::int64_t l2_bytes) {
  return static_cast<int>(std::min<std::int64_t>(16, 2 * l2_bytes / bytes_per_set + 1));
}

// Median over `reps` of the mean time (us) of `launches` calls, call(i) using input set i.
inline float time_us(const std::function<void(int)>& call, int sets, int reps = 15, int launches = 20) {
  cudaEvent_t a, b;
  FK_CUDA_CHECK(cudaEventCreate(&a));
  FK_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < sets; ++i) call(i);  // warm-up
  std::vector<float> t;
  for (int r = 0; r < reps; ++r) {
    FK_CUDA_CHECK(cudaEventRecord(a));
    for (int i = 0; i < launches; ++i) call((r * launches + i) % sets);
    FK_CUDA_CHECK(cudaEventRecord(b));
    FK_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0.f;
    FK_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1000.f / launches);
  }
  FK_CUDA_CHECK(cudaEventDestroy(a));
  FK_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// What a sweep's main() starts from: its arguments (--quick: a short run), device 0's properties.
struct Setup {
  bool quick = false;
  cudaDeviceProp prop{};
  int argc = 0;
  char** argv = nullptr;
  // Whether `flag` (e.g. "--out-of-place") is among the arguments.
  bool flag(const char* name) const {
    for (int i = 1; i < argc; ++i) {
      if (std::strcmp(argv[i], name) == 0) return true;
    }
    return false;
  }
};

// Reads the arguments and device 0, and prints the device line and `csv_header`. False (after a
// message) when there is no CUDA device: main then returns 2.
inline bool start(int argc, char** argv, const char* name, const char* csv_header, Setup& s) {
  s.argc = argc;
  s.argv = argv;
  s.quick = s.flag("--quick");
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::fprintf(stderr, "%s: no CUDA device\n", name);
    return false;
  }
  FK_CUDA_CHECK(cudaGetDeviceProperties(&s.prop, 0));
  std::printf("# %s, %d SMs\n%s\n", s.prop.name, s.prop.multiProcessorCount, csv_header);
  return true;
}

// main's exit status: 1 (with a message) when `failures` variants differed from the library.
inline int finish(const char* name, int failures) {
  if (failures) std::fprintf(stderr, "%s: %d variant(s) differ from the library\n", name, failures);
  return failures ? 1 : 0;
}

// A sweep's whole main(): start, then run(dtype tag, dtype name, setup) for float16 and bfloat16
// (each returning how many variants differed from the library), then finish's exit status.
template <typename Run>
int run_sweep(int argc, char** argv, const char* name, const char* csv_header, Run run) {
  Setup s;
  if (!start(argc, argv, name, csv_header, s)) return 2;
  int failures = run(__half{}, "float16", s);
  failures += run(__nv_bfloat16{}, "bfloat16", s);
  return finish(name, failures);
}

}  // namespace sweep
