// Tuning sweep for gelu_linear's weight-streaming kernel at decode sizes (M = 1 and 16, the tile
// of 16 rows): the library's configuration against instances it does not use
// (src/gelu_linear/gelu_linear_config.h, SmallMConfig), in one process on one card, on the same
// inputs, the variants alternated over rounds. At M = 1, K = 4096, N = 16384 the library streams
// W at ~2.5 TB/s on an H100 (0.93-0.96x cuBLASLt's GELU_BIAS epilogue); the sweep asks which of
// more warps per CTA, wider or narrower column blocks, or one CTA per SM with a deeper ring moves
// that.
//
// Variants (NT: 8-column tiles per CTA; stages and CTAs per SM follow from the ring budget):
//   library    gelu_linear's own choice (launch_small_m): NT = 4 where N has >= 2 blocks per SM,
//              else NT = 1; 4 warps; the deep ring (110 KiB budget: 2 CTAs per SM on sm_90)
//   w8         the library's tile with 8 warps (each a 32-column K slice of a stage)
//   nt2        NT = 2 (twice the CTAs of NT = 4, half the W rows each), 4 warps
//   nt4_1cta   NT = 4 with a 200 KiB budget: 6 stages, one CTA per SM
//   nt8_1cta   NT = 8 with a 200 KiB budget: 4 stages of 64 W rows, one CTA per SM
//   nt8_w8     NT = 8, 8 warps, 200 KiB budget
//   tma        the library's tile with its ring filled by TMA (SmallMCopy::kTensorMaps: 8 copies
//              of 64 columns per stage, thread 0 issuing) instead of 16-byte thread copies
//   tma_nt8_1cta  the same at NT = 8 with a 200 KiB budget (4 stages, one CTA per SM)
// Every variant but w8/nt8_w8 sums each output in the library's order (same K split over warps),
// so its output must equal the library's bit for bit; with 8 warps the cross-warp sum has 8 terms
// instead of 4, so those are checked against the library within 1% of the output's largest value.
//
//   gelu_small_m_variants_bench [--quick]   prints CSV: dtype,M,K,N,variant,us,weight_gbps
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <type_traits>
#include <vector>

#include "bench_util.cuh"
#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "common/tensor_map.h"
#include "gelu_linear/gelu_linear_kernels.cuh"

namespace {

using flashkernel::gelu_linear_detail::gelu_linear_small_m_kernel;
using flashkernel::gelu_linear_detail::kSmallMDeepBudget;
using flashkernel::gelu_linear_detail::Problem;
using flashkernel::gelu_linear_detail::SmallMConfig;
using flashkernel::gelu_linear_detail::SmallMCopy;
using flashkernel::gelu_linear_detail::SmallMMaps;

constexpr int kOneCtaBudget = 200 * 1024;

// Whether gelu_linear gives M <= 16 the 4-tile (32-column) blocks (launch_small_m_for).
bool library_takes_nt4(int n, int sms) { return n / 32 >= 2 * sms; }

template <typename T>
void library(const Problem& p, int sms, int smem_optin) {
  using namespace flashkernel::gelu_linear_detail;
  library_takes_nt4(p.n, sms) ? launch_small_m<T, 1, 4>(p, smem_optin, nullptr)
                              : launch_small_m<T, 1, 1>(p, smem_optin, nullptr);
}

template <typename T, typename Cfg>
void launch_cfg(const Problem& p) {
  constexpr auto kernel = gelu_linear_small_m_kernel<T, Cfg>;
  static bool configured = false;  // one device per process
  if (!configured) {
    FK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::SMEM_BYTES));
    configured = true;
  }
  kernel<<<static_cast<unsigned>((p.n + Cfg::ROWS_W - 1) / Cfg::ROWS_W), Cfg::THREADS, Cfg::SMEM_BYTES>>>(p);
  FK_CHECK_LAUNCH();
}

// The library's tile with 8 warps.
template <typename T>
void w8(const Problem& p, int sms, int) {
  library_takes_nt4(p.n, sms) ? launch_cfg<T, SmallMConfig<1, 4, kSmallMDeepBudget, 8>>(p)
                            : launch_cfg<T, SmallMConfig<1, 1, kSmallMDeepBudget, 8>>(p);
}
template <typename T, int NT, int kBudget, int kWarps>
void fixed(const Problem& p, int, int) {
  launch_cfg<T, SmallMConfig<1, NT, kBudget, kWarps>>(p);
}
// TMA-filled rings (p.tensor_maps points at maps with W boxes of the tile's NT * 8 rows).
template <typename T>
void tma(const Problem& p, int sms, int) {
  library_takes_nt4(p.n, sms) ? launch_cfg<T, SmallMConfig<1, 4, kSmallMDeepBudget, 4, SmallMCopy::kTensorMaps>>(p)
                            : launch_cfg<T, SmallMConfig<1, 1, kSmallMDeepBudget, 4, SmallMCopy::kTensorMaps>>(p);
}
template <typename T>
void tma_nt8(const Problem& p, int, int) {
  launch_cfg<T, SmallMConfig<1, 8, kOneCtaBudget, 4, SmallMCopy::kTensorMaps>>(p);
}

// The x and W maps of one problem, W in boxes of w_box_rows rows; false if TMA cannot describe them.
template <typename T>
bool make_maps(SmallMMaps& maps, const T* x, const T* w, int m, int n, int k, int w_box_rows) {
  constexpr flashkernel::DType dtype = flashkernel::dtype_of<T>();
  const std::uint64_t row = std::uint64_t(k) * sizeof(T);
  const std::uint64_t x_dims[4] = {std::uint64_t(k), std::uint64_t(m), 1, 1}, x_strides[3] = {row, row * m, row * m};
  const std::uint64_t w_dims[4] = {std::uint64_t(k), std::uint64_t(n), 1, 1}, w_strides[3] = {row, row * n, row * n};
  const std::uint32_t x_box[4] = {64, 16, 1, 1}, w_box[4] = {64, std::uint32_t(w_box_rows), 1, 1};
  return flashkernel::detail::make_tensor_map_4d(&maps.x, x, dtype, x_dims, x_strides, x_box) &&
         flashkernel::detail::make_tensor_map_4d(&maps.w, w, dtype, w_dims, w_strides, w_box);
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
    bool same_order;  // sums in the library's order: outputs must be equal
    bool one_cta;     // a ring of up to 200 KiB: needs sm_90's opt-in limit
    int tma_nt;       // TMA-filled (sm_90): the tile's NT (-1: the library's), else 0
  };
  const Variant variants[] = {
      {"library", library<T>, true, false, 0},
      {"w8", w8<T>, false, false, 0},
      {"nt2", fixed<T, 2, kSmallMDeepBudget, 4>, true, false, 0},
      {"nt4_1cta", fixed<T, 4, kOneCtaBudget, 4>, true, true, 0},
      {"nt8_1cta", fixed<T, 8, kOneCtaBudget, 4>, true, true, 0},
      {"nt8_w8", fixed<T, 8, kOneCtaBudget, 8>, false, true, 0},
      {"tma", tma<T>, true, false, -1},
      {"tma_nt8_1cta", tma_nt8<T>, true, true, 8},
  };
  // A variant runs here unless it needs more shared memory or sm_90 (TMA) that the GPU lacks.
  auto runs_here = [&](const Variant& v, int smem_optin) {
    return !(v.one_cta && smem_optin < kOneCtaBudget) && !(v.tma_nt != 0 && s.prop.major < 9);
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
    // Tensor maps per input set for the W box heights the TMA variants use (8 * NT rows).
    const int nt_lib = library_takes_nt4(sh.n, sms) ? 4 : 1;
    const int tma_nts[2] = {nt_lib, 8};
    std::vector<SmallMMaps> host_maps(2 * sets);
    bool maps_ok = true;
    for (int i = 0; i < 2; ++i) {
      for (int set = 0; set < sets; ++set) {
        maps_ok = maps_ok && make_maps<T>(host_maps[i * sets + set], x, w + set * w_elems, sh.m, sh.n, sh.k, 8 * tma_nts[i]);
      }
    }
    SmallMMaps* maps = nullptr;
    FK_CUDA_CHECK(cudaMalloc(&maps, host_maps.size() * sizeof(SmallMMaps)));
    FK_CUDA_CHECK(cudaMemcpy(maps, host_maps.data(), host_maps.size() * sizeof(SmallMMaps), cudaMemcpyHostToDevice));
    auto problem = [&](int set, const Variant& v) {
      Problem p{x, w + set * w_elems, bias, out, sh.m, sh.n, sh.k, flashkernel::GeluApproximation::kTanh};
      if (v.tma_nt != 0) p.tensor_maps = maps + (v.tma_nt == 8 ? sets : 0) + set;
      return p;
    };
    std::vector<float> ref;
    for (const Variant& v : variants) {
      if (!runs_here(v, smem_optin) || (v.tma_nt != 0 && !maps_ok)) continue;
      FK_CUDA_CHECK(cudaMemset(out, 0xff, out_elems * sizeof(T)));  // NaN: a missed output shows
      v.launch(problem(0, v), sms, smem_optin);
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
        if (!runs_here(variants[i], smem_optin) || (variants[i].tma_nt != 0 && !maps_ok)) continue;
        times[i].push_back(
            sweep::time_us([&](int set) { variants[i].launch(problem(set, variants[i]), sms, smem_optin); }, sets));
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
    FK_CUDA_CHECK(cudaFree(maps));
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
