// A/B of the two ways gelu_linear's weight-streaming (M <= 64) kernel fills its shared-memory ring
// (src/gelu_linear/gelu_linear_config.h, SmallMCopy): 16-byte cp.async copies issued by every
// thread, against one cp.async.bulk per row issued by one warp (sm_90, K a multiple of 256). Both
// run the library's launcher (gelu_linear_detail::launch_small_m) on the tile gelu_linear picks for
// the shape, on the same inputs, alternated over rounds; each pair is first checked equal
// element for element (the same arithmetic, only the copies differ).
//
//   gelu_small_m_copies_bench [--quick]   prints CSV: dtype,M,K,N,variant,us,weight_gbps
// weight_gbps: the weight matrix's bytes over the time (the bytes the kernel must stream).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "bench_util.cuh"
#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "gelu_linear/gelu_linear_config.h"

namespace {

using flashkernel::gelu_linear_detail::Problem;
using flashkernel::gelu_linear_detail::SmallMCopy;

// The tile gelu_linear takes for M (launch_small_m_for in gelu_linear.cu): NT = 4 where N leaves
// at least two 32-column blocks per SM.
template <typename T>
void launch(const Problem& p, int sms, int smem_optin, SmallMCopy copy) {
  using namespace flashkernel::gelu_linear_detail;
  const bool wide = p.n / 32 >= 2 * sms;
  if (p.m <= 16) {
    wide ? launch_small_m<T, 1, 4>(p, smem_optin, nullptr, copy) : launch_small_m<T, 1, 1>(p, smem_optin, nullptr, copy);
  } else if (p.m <= 32) {
    wide ? launch_small_m<T, 2, 4>(p, smem_optin, nullptr, copy) : launch_small_m<T, 2, 1>(p, smem_optin, nullptr, copy);
  } else {
    wide ? launch_small_m<T, 4, 4>(p, smem_optin, nullptr, copy) : launch_small_m<T, 4, 1>(p, smem_optin, nullptr, copy);
  }
  FK_CHECK_LAUNCH();
}

template <typename T>
std::vector<unsigned short> bits_of(const T* d, std::int64_t n) {
  std::vector<unsigned short> h(static_cast<std::size_t>(n));
  FK_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

template <typename T>
int run_dtype(const char* dtype, const sweep::Setup& s) {
  struct Shape { int m, k, n; };
  const std::vector<Shape> shapes = s.quick ? std::vector<Shape>{{1, 4096, 16384}}
                                            : std::vector<Shape>{{1, 768, 3072},   {1, 3072, 768},   {1, 4096, 16384},
                                                                 {16, 768, 3072},  {16, 3072, 768},  {16, 4096, 16384},
                                                                 {1, 4096, 4096},  {1, 11008, 4096}, {8, 4096, 11008},
                                                                 {64, 4096, 16384}};
  int smem_optin = 0;
  FK_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  const int sms = s.prop.multiProcessorCount;
  int failures = 0;
  for (const Shape& sh : shapes) {
    const std::int64_t w_elems = std::int64_t(sh.n) * sh.k;
    const int sets = sweep::rotation_sets(w_elems * sizeof(T), s.prop.l2CacheSize);
    T *x, *w, *bias, *out_a, *out_b;
    FK_CUDA_CHECK(cudaMalloc(&x, std::int64_t(sh.m) * sh.k * sizeof(T)));
    FK_CUDA_CHECK(cudaMalloc(&w, sets * w_elems * sizeof(T)));
    FK_CUDA_CHECK(cudaMalloc(&bias, sh.n * sizeof(T)));
    FK_CUDA_CHECK(cudaMalloc(&out_a, std::int64_t(sh.m) * sh.n * sizeof(T)));
    FK_CUDA_CHECK(cudaMalloc(&out_b, std::int64_t(sh.m) * sh.n * sizeof(T)));
    sweep::fill(x, std::int64_t(sh.m) * sh.k, 1);
    sweep::fill(w, sets * w_elems, 2, 0.05f);
    sweep::fill(bias, sh.n, 3);
    auto problem = [&](int set, T* out) {
      return Problem{x, w + set * w_elems, bias, out, sh.m, sh.n, sh.k, flashkernel::GeluApproximation::kTanh};
    };
    launch<T>(problem(0, out_a), sms, smem_optin, SmallMCopy::kBulkCopies);
    launch<T>(problem(0, out_b), sms, smem_optin, SmallMCopy::kThreadCopies);
    FK_CUDA_CHECK(cudaDeviceSynchronize());
    if (bits_of(out_a, std::int64_t(sh.m) * sh.n) != bits_of(out_b, std::int64_t(sh.m) * sh.n)) {
      std::fprintf(stderr, "M=%d K=%d N=%d: bulk and thread copies differ\n", sh.m, sh.k, sh.n);
      ++failures;
    }
    // Rounds alternate the two variants; each round's time is a median of CUDA-event means.
    const int rounds = s.quick ? 2 : 5;
    std::vector<float> t_bulk, t_thread;
    for (int r = 0; r < rounds; ++r) {
      t_bulk.push_back(sweep::time_us([&](int i) { launch<T>(problem(i, out_a), sms, smem_optin, SmallMCopy::kBulkCopies); }, sets));
      t_thread.push_back(
          sweep::time_us([&](int i) { launch<T>(problem(i, out_b), sms, smem_optin, SmallMCopy::kThreadCopies); }, sets));
    }
    for (auto* t : {&t_bulk, &t_thread}) std::sort(t->begin(), t->end());
    for (auto [name, t] : {std::pair{"bulk", &t_bulk}, std::pair{"thread", &t_thread}}) {
      const float us = (*t)[t->size() / 2];
      std::printf("%s,%d,%d,%d,%s,%.2f,%.0f\n", dtype, sh.m, sh.k, sh.n, name, us, w_elems * sizeof(T) / (us * 1e3));
    }
    for (T* p : {x, w, bias, out_a, out_b}) FK_CUDA_CHECK(cudaFree(p));
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  constexpr const char* kName = "gelu_small_m_copies_bench";
  sweep::Setup s;
  if (!sweep::start(argc, argv, kName, "dtype,M,K,N,variant,us,weight_gbps", s)) return 2;
  int failures = run_dtype<__half>("float16", s);
  failures += run_dtype<__nv_bfloat16>("bfloat16", s);
  return sweep::finish(kName, failures);
}
