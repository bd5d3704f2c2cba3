// Tuning sweep for the add_layernorm / add_rms_norm vector kernel: times the library's choice
// against variants the library does not use (src/layernorm/add_norm_vector.cuh), in one process
// on one card, and checks every variant's output against the library's. Not part of the results
// CSVs: its job is to decide what the library should pick (DEVELOPMENT_LOG.md, "Memory-bound").
//
// Variants (16-bit types; norm_variant:: in src/layernorm/add_norm_vector.cuh):
//   library  the shipped choice (norm_variant::kLibrary): up to 4 vectors per lane, the rounded
//            sums kept as fp32, 16-bit <-> fp32 conversions two elements per instruction
//   plain    the same without pair conversions (the library's choice until the first sweep)
//   early    plain with gamma/beta loaded before the first row reduction
//   pairs    plain with pair conversions (what the library ships)
//   sumT8    the rounded sums kept as 16-bit vectors, up to 8 vectors per lane (half the warps
//            per row at widths >= 2048, so more rows per SM); and combinations
// Ratio: a cudaMemcpyAsync of the same bytes (half read, half written) over the variant's time.
//
//   layernorm_variants_bench [--quick]      prints CSV: dtype,op,rows,cols,variant,us,ratio_copy
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "bench_util.cuh"
#include "layernorm/add_norm_vector.cuh"

namespace {

using flashkernel::to_float;
using flashkernel::layernorm_detail::launch_vector_kernel;
using flashkernel::layernorm_detail::NormRows;
using flashkernel::layernorm_detail::norm_variant::kEarlyAffine;
using flashkernel::layernorm_detail::norm_variant::kPairConvert;
using flashkernel::layernorm_detail::norm_variant::kSumInT;

template <typename T>
std::vector<float> to_host(const T* d, std::int64_t n) {
  std::vector<T> h(n);
  FK_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> f(n);
  for (std::int64_t i = 0; i < n; ++i) f[i] = to_float(h[i]);
  return f;
}

template <typename T>
int run_dtype(const char* dtype, bool quick, std::int64_t l2_bytes) {
  using Launch = void (*)(const NormRows<T>&, cudaStream_t);
  const struct {
    const char* name;
    Launch launch;
  } variants[] = {{"library", launch_vector_kernel<T>},
                  {"plain", launch_vector_kernel<T, 0>},
                  {"early", launch_vector_kernel<T, kEarlyAffine>},
                  {"pairs", launch_vector_kernel<T, kPairConvert>},
                  {"pairs_early", launch_vector_kernel<T, kPairConvert | kEarlyAffine>},
                  {"sumT8", launch_vector_kernel<T, kSumInT, 8>},
                  {"sumT8_pairs", launch_vector_kernel<T, kSumInT | kPairConvert, 8>},
                  {"sumT8_pairs_early", launch_vector_kernel<T, kSumInT | kPairConvert | kEarlyAffine, 8>}};
  // One ulp of T near 4 (outputs are normalized values times gamma in [-2, 2)), for the check
  // of a variant against the library: the reductions may add in another order.
  const float tol = std::is_same_v<T, __nv_bfloat16> ? 4.f / 128.f : 4.f / 1024.f;
  const std::vector<int> rows_list = quick ? std::vector<int>{16384} : std::vector<int>{4096, 16384};
  int failures = 0;
  for (const bool rms : {false, true}) {
    for (const int rows : rows_list) {
      for (const int cols : {768, 1024, 2048, 4096, 8192}) {
        const std::int64_t n = std::int64_t(rows) * cols;
        const std::int64_t bytes = 4 * n * std::int64_t(sizeof(T));
        const int sets = sweep::rotation_sets(bytes, l2_bytes);
        std::vector<T*> x(sets), r(sets), out(sets), sum(sets);
        for (int s = 0; s < sets; ++s) {
          for (T** ptr : {&x[s], &r[s], &out[s], &sum[s]}) FK_CUDA_CHECK(cudaMalloc(ptr, n * sizeof(T)));
          sweep::fill(x[s], n, 17u + s, 2.f);
          sweep::fill(r[s], n, 91u + s, 2.f);
        }
        T *gamma, *beta;
        FK_CUDA_CHECK(cudaMalloc(&gamma, cols * sizeof(T)));
        FK_CUDA_CHECK(cudaMalloc(&beta, cols * sizeof(T)));
        sweep::fill(gamma, cols, 5u, 2.f);
        sweep::fill(beta, cols, 6u, 2.f);
        auto params = [&](int s) {
          return NormRows<T>{x[s], r[s], nullptr, gamma, rms ? nullptr : beta, out[s], sum[s], rows, cols, 1e-5f, rms};
        };
        const float copy_us = sweep::time_us([&](int s) {
          FK_CUDA_CHECK(cudaMemcpyAsync(out[s], x[s], n * sizeof(T), cudaMemcpyDeviceToDevice));
          FK_CUDA_CHECK(cudaMemcpyAsync(sum[s], r[s], n * sizeof(T), cudaMemcpyDeviceToDevice));
        }, sets);
        std::vector<float> ref_out, ref_sum;
        for (const auto& v : variants) {
          // Output check on set 0, poisoned first.
          FK_CUDA_CHECK(cudaMemset(out[0], 0xff, n * sizeof(T)));
          FK_CUDA_CHECK(cudaMemset(sum[0], 0xff, n * sizeof(T)));
          v.launch(params(0), nullptr);
          FK_CUDA_CHECK(cudaDeviceSynchronize());
          std::vector<float> o = to_host(out[0], n), su = to_host(sum[0], n);
          if (ref_out.empty()) {
            ref_out = o;
            ref_sum = su;
          } else {
            for (std::int64_t i = 0; i < n; ++i) {
              if (!(std::fabs(o[i] - ref_out[i]) <= tol) || !(su[i] == ref_sum[i])) {
                std::fprintf(stderr, "MISMATCH %s %s rows=%d cols=%d at %lld: out %g vs %g, sum %g vs %g\n", dtype,
                             v.name, rows, cols, static_cast<long long>(i), o[i], ref_out[i], su[i], ref_sum[i]);
                ++failures;
                break;
              }
            }
          }
          const float us = sweep::time_us([&](int s) { v.launch(params(s), nullptr); }, sets);
          std::printf("%s,%s,%d,%d,%s,%.2f,%.3f\n", dtype, rms ? "add_rms_norm" : "add_layernorm", rows, cols, v.name,
                      us, copy_us / us);
        }
        std::fflush(stdout);
        for (int s = 0; s < sets; ++s) {
          for (T* ptr : {x[s], r[s], out[s], sum[s]}) FK_CUDA_CHECK(cudaFree(ptr));
        }
        FK_CUDA_CHECK(cudaFree(gamma));
        FK_CUDA_CHECK(cudaFree(beta));
      }
    }
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  return sweep::run_sweep(argc, argv, "layernorm_variants_bench", "dtype,op,rows,cols,variant,us,ratio_copy",
                          [](auto tag, const char* dtype, const sweep::Setup& s) {
                            return run_dtype<decltype(tag)>(dtype, s.quick, s.prop.l2CacheSize);
                          });
}
