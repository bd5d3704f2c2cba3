// Tuning sweep for gelu_linear's weight-streaming kernel at decode sizes (M = 1 and 16, the tile
// of 16 rows): the library's configuration against instances it does not use
// (src/gelu_linear/gelu_linear_config.h, SmallMConfig), in one process on one card, on the same
// inputs, the variants alternated over rounds. With thread copies the library streamed W at
// ~2.5 TB/s on an H100 at M = 1, K = 4096, N = 16384 (0.93-0.96x cuBLASLt's GELU_BIAS epilogue);
// filling the ring by TMA (SmallMCopy::kTensorMaps) measured 1.1-1.8x that on an H200 and is now
// the library's choice on sm_90 (small_m_tma_nt); this sweep keeps both fills and the column
// tiles side by side so the choice can be rechecked on every card.
//
// Variants (NT: 8-column tiles per CTA; stages and CTAs per SM follow from the ring budget):
//   library    gelu_linear's own launch (launch_small_m_for): on sm_90 the TMA-filled ring at
//              small_m_tma_nt's NT, else the thread copies below
//   threads    the thread-copy kernel: NT = 4 where N has >= 2 blocks per SM, else NT = 1;
//              4 warps; the deep ring (110 KiB budget: 2 CTAs per SM on sm_90)
//   w8         the thread-copy tile with 8 warps (each a 32-column K slice of a stage)
//   nt2        thread copies at NT = 2, 4 warps
//   tma_nt1 .. tma_nt8  TMA-filled at a fixed NT of 1, 2, 4 or 8 (the deep ring)
//   tma_nt8_1cta  TMA-filled at NT = 8 with a 200 KiB budget (4 stages, one CTA per SM)
// (One CTA per SM with thread copies, NT = 4 or 8, measured 0.7-0.9x on an H100 and left the
// sweep.) Every variant but w8 sums each output in the same order (the same K split over 4
// warps), so its output must equal the first variant's bit for bit; with 8 warps the cross-warp
// sum has 8 terms instead of 4, so w8 is checked within 1% of the output's largest value. Each TMA
// launch encodes its two tensor maps on the host, as the library's does.
//
//   gelu_small_m_variants_bench [--quick]   prints CSV: dtype,M,K,N,variant,us,weight_gbps
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <vector>

#include "bench_util.cuh"
#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "common/launch.h"
#include "gelu_linear/gelu_linear_kernels.cuh"

namespace {

using namespace flashkernel::gelu_linear_detail;

constexpr int kOneCtaBudget = 200 * 1024;

// The thread-copy kernel at gelu_linear's column tile for it.
template <typename T>
void threads(const Problem& p, int sms, int smem_optin) {
  small_m_thread_nt(p.n, sms) == 4 ? launch_small_m<T, 1, 4>(p, smem_optin, nullptr)
                                   : launch_small_m<T, 1, 1>(p, smem_optin, nullptr);
}

template <typename T>
void library(const Problem& p, int sms, int smem_optin) {
  launch_small_m_for<T, 1>(p, sms, smem_optin, nullptr);
}

template <typename T, int NT, int kBudget, int kWarps>
void fixed(const Problem& p, int, int) {
  using Cfg = SmallMConfig<1, NT, kBudget, kWarps>;
  constexpr auto kernel = gelu_linear_small_m_kernel<T, Cfg>;
  flashkernel::detail::ensure_smem_opt_in<kernel>(Cfg::SMEM_BYTES);
  kernel<<<static_cast<unsigned>((p.n + Cfg::ROWS_W - 1) / Cfg::ROWS_W), Cfg::THREADS, Cfg::SMEM_BYTES>>>(p);
  FK_CHECK_LAUNCH();
}

// The thread-copy tile with 8 warps.
template <typename T>
void w8(const Problem& p, int sms, int smem_optin) {
  small_m_thread_nt(p.n, sms) == 4 ? fixed<T, 4, kSmallMDeepBudget, 8>(p, sms, smem_optin)
                                   : fixed<T, 1, kSmallMDeepBudget, 8>(p, sms, smem_optin);
}

template <typename T, int NT, int kBudget>
void tma_fixed(const Problem& p, int, int) {
  using Cfg = SmallMConfig<1, NT, kBudget, 4, SmallMCopy::kTensorMaps>;
  constexpr auto kernel = gelu_linear_small_m_tma_kernel<T, Cfg>;
  SmallMMaps maps;
  if (!make_matrix_map(&maps.x, p.x, flashkernel::dtype_of<T>(), p.m, p.k, Cfg::ROWS_X) ||
      !make_matrix_map(&maps.w, p.w, flashkernel::dtype_of<T>(), p.n, p.k, Cfg::ROWS_W)) {
    std::fprintf(stderr, "error: TMA cannot describe x or W\n");
    std::exit(1);
  }
  flashkernel::detail::ensure_smem_opt_in<kernel>(Cfg::SMEM_BYTES);
  kernel<<<static_cast<unsigned>((p.n + Cfg::ROWS_W - 1) / Cfg::ROWS_W), Cfg::THREADS, Cfg::SMEM_BYTES>>>(p, maps);
  FK_CHECK_LAUNCH();
}

template <typename T>
std::vector<float> values_of(const T* d, std::int64_t n) {
  std::vector<T> h(static_cast<std::size_t>(n));
  FK_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  std::vector<float> f(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) f[i] = flashkernel::to_float(h[i]);
  return f;
}

template <typename T>
int run_dtype(const char* dtype, const sweep::Setup& s) {
  using Launch = void (*)(const Problem&, int, int);
  struct Variant {
    const char* name;
    Launch launch;
    bool same_order;  // sums in the first variant's order: outputs must be equal
    bool one_cta;     // a ring of up to 200 KiB: needs sm_90's opt-in limit
    bool tma;         // TMA-filled: sm_90 only
  };
  const Variant variants[] = {
      {"library", library<T>, true, false, false},
      {"threads", threads<T>, true, false, false},
      {"w8", w8<T>, false, false, false},
      {"nt2", fixed<T, 2, kSmallMDeepBudget, 4>, true, false, false},
      {"tma_nt1", tma_fixed<T, 1, kSmallMDeepBudget>, true, false, true},
      {"tma_nt2", tma_fixed<T, 2, kSmallMDeepBudget>, true, false, true},
      {"tma_nt4", tma_fixed<T, 4, kSmallMDeepBudget>, true, false, true},
      {"tma_nt8", tma_fixed<T, 8, kSmallMDeepBudget>, true, false, true},
      {"tma_nt8_1cta", tma_fixed<T, 8, kOneCtaBudget>, true, true, true},
  };
  // A variant runs here unless it needs more shared memory or sm_90 (TMA) that the GPU lacks.
  auto runs_here = [&](const Variant& v, int smem_optin) {
    return !(v.one_cta && smem_optin < kOneCtaBudget) && !(v.tma && s.prop.major < 9);
  };
  struct Shape { int m, k, n; };
  const std::vector<Shape> shapes = s.quick ? std::vector<Shape>{{1, 4096, 16384}}
                                            : std::vector<Shape>{{1, 4096, 16384}, {16, 4096, 16384}, {1, 768, 3072},
                                                                 {16, 768, 3072},  {1, 3072, 768},    {16, 3072, 768},
                                                                 {1, 4096, 4096},  {1, 11008, 4096}};
  int smem_optin = 0;
  FK_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  const int sms = s.prop.multiProcessorCount;
  int failures = 0;
  for (const Shape& sh : shapes) {
    const std::int64_t w_elems = std::int64_t(sh.n) * sh.k, out_elems = std::int64_t(sh.m) * sh.n;
    const int sets = sweep::rotation_sets(w_elems * sizeof(T), s.prop.l2CacheSize);
    T *x, *w, *bias, *out;
    FK_CUDA_CHECK(cudaMalloc(&x, std::int64_t(sh.m) * sh.k * sizeof(T)));
    FK_CUDA_CHECK(cudaMalloc(&w, sets * w_elems * sizeof(T)));
    FK_CUDA_CHECK(cudaMalloc(&bias, sh.n * sizeof(T)));
    FK_CUDA_CHECK(cudaMalloc(&out, out_elems * sizeof(T)));
    sweep::fill(x, std::int64_t(sh.m) * sh.k, 1);
    sweep::fill(w, sets * w_elems, 2, 0.05f);
    sweep::fill(bias, sh.n, 3);
    auto problem = [&](int set) {
      return Problem{x, w + set * w_elems, bias, out, sh.m, sh.n, sh.k, flashkernel::GeluApproximation::kTanh};
    };
    std::vector<float> ref;
    for (const Variant& v : variants) {
      if (!runs_here(v, smem_optin)) continue;
      FK_CUDA_CHECK(cudaMemset(out, 0xff, out_elems * sizeof(T)));  // NaN: a missed output shows
      v.launch(problem(0), sms, smem_optin);
      FK_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<float> got = values_of(out, out_elems);
      if (ref.empty()) {
        ref = got;
        continue;
      }
      float scale = 0.f, worst = 0.f;
      for (std::size_t i = 0; i < got.size(); ++i) {
        scale = std::max(scale, std::fabs(ref[i]));
        worst = std::isnan(got[i]) ? INFINITY : std::max(worst, std::fabs(got[i] - ref[i]));
      }
      if (v.same_order ? worst != 0.f : !(worst <= 0.01f * scale)) {
        std::fprintf(stderr, "MISMATCH %s %s M=%d K=%d N=%d: max |diff| %g (max |ref| %g)\n", dtype, v.name, sh.m,
                     sh.k, sh.n, worst, scale);
        ++failures;
      }
    }
    // Rounds alternate the variants; each round's time is a median of CUDA-event means.
    const int rounds = s.quick ? 2 : 5;
    std::vector<std::vector<float>> times(std::size(variants));
    for (int r = 0; r < rounds; ++r) {
      for (std::size_t i = 0; i < std::size(variants); ++i) {
        if (!runs_here(variants[i], smem_optin)) continue;
        times[i].push_back(
            sweep::time_us([&](int set) { variants[i].launch(problem(set), sms, smem_optin); }, sets));
      }
    }
    for (std::size_t i = 0; i < std::size(variants); ++i) {
      if (times[i].empty()) continue;
      std::sort(times[i].begin(), times[i].end());
      const float us = times[i][times[i].size() / 2];
      std::printf("%s,%d,%d,%d,%s,%.2f,%.0f\n", dtype, sh.m, sh.k, sh.n, variants[i].name, us,
                  w_elems * sizeof(T) / (us * 1e3));
    }
    std::fflush(stdout);
    for (T* p : {x, w, bias, out}) FK_CUDA_CHECK(cudaFree(p));
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  return sweep::run_sweep(argc, argv, "gelu_small_m_variants_bench", "dtype,M,K,N,variant,us,weight_gbps",
                          [](auto tag, const char* dtype, const sweep::Setup& s) {
                            return run_dtype<decltype(tag)>(dtype, s);
                          });
}
