// Tuning sweep for the RoPE kernel (neox, float32 tables, in place, q and k [B, H, N, d]): times
// the library's configuration against instances the library does not use
// (src/rope/rope_kernel.cuh), in one process on one card, and checks each against the library's
// output bit for bit (the same arithmetic, only the index math and the work split differ).
//
// Variants:
//   library     the shipped configuration: the thread decomposition in 32-bit arithmetic (every
//               launch under 2^32 threads), one head per step, 16 target waves
//   idx64       the same in 64-bit arithmetic (what the library ran before the first sweep, and
//               still runs for launches of 2^32 threads or more)
//   idx32_w4    library with 4 target waves (each thread walks ~4x more heads: fewer cos/sin reloads)
//   idx32_u2mb3 library with two heads per step at 3 blocks per SM
//   balanced    library with the head groups evened out: every thread walks the same number of
//               heads (16 waves give 33 groups for 64 heads: 31 threads of 2 heads, 2 of 1)
//   idx32_w2, idx32_w8   library with 2 and 8 target waves (more / fewer heads per thread)
// Ratio: a cudaMemcpyAsync of the same bytes (half read, half written) over the variant's time.
// In place by default; --out-of-place writes q and k to separate buffers, as the Python
// benchmark's rows do (where the CUDA kernel trails the Triton twin at N <= 2048).
//
//   rope_variants_bench [--quick] [--out-of-place]   prints CSV: dtype,B,N,Hq,Hk,d,variant,us,ratio_copy
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/cuda_check.h"
#include "common/dtype_traits.cuh"
#include "bench_util.cuh"
#include "rope/rope_kernel.cuh"

namespace {

using flashkernel::RopeStyle;
using namespace flashkernel::rope_detail;

// cos/sin tables [positions, half] of float32 for base 10000 (values only need to be finite).
__global__ void table_kernel(float* cos_t, float* sin_t, std::int64_t positions, int half) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < positions * half;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const float angle = static_cast<float>(i / half) * powf(10000.f, -2.f * static_cast<float>(i % half) / (2 * half));
    sincosf(angle, &sin_t[i], &cos_t[i]);
  }
}

// One launch of an instance, planned as the library plans (launch_with) but with the sweep's
// waves and template arguments.
template <typename T, int kHeadUnroll, int kMinBlocks, bool kIndex32>
void launch_instance(Params p, int waves) {
  constexpr int kVec = flashkernel::kVectorBytes / sizeof(T);
  plan<RopeStyle::kNeox, kVec>(p, /*inplace=*/true, waves);
  const std::int64_t blocks = flashkernel::detail::ceil_div(p.total_threads, kThreads);
  rope_kernel<T, float, RopeStyle::kNeox, false, kVec, kHeadUnroll, kMinBlocks, kIndex32>
      <<<static_cast<unsigned>(blocks), kThreads>>>(p, NoInvFreq{});
  FK_CHECK_LAUNCH();
}

// The library's instance with as few head groups as give every thread the same head count.
template <typename T>
void launch_balanced(Params p, int waves) {
  constexpr int kVec = flashkernel::kVectorBytes / sizeof(T);
  plan<RopeStyle::kNeox, kVec>(p, /*inplace=*/true, waves);
  const std::int64_t heads = p.q.heads + p.k.heads;
  const std::int64_t per_thread = flashkernel::detail::ceil_div(heads, p.head_groups);
  p.total_threads = p.total_threads / p.head_groups;
  p.head_groups = static_cast<int>(flashkernel::detail::ceil_div(heads, per_thread));
  p.total_threads *= p.head_groups;
  const std::int64_t blocks = flashkernel::detail::ceil_div(p.total_threads, kThreads);
  rope_kernel<T, float, RopeStyle::kNeox, false, kVec, head_unroll<RopeStyle::kNeox>(),
              min_blocks_per_sm<RopeStyle::kNeox>(), true><<<static_cast<unsigned>(blocks), kThreads>>>(p, NoInvFreq{});
  FK_CHECK_LAUNCH();
}

template <typename T>
int run_dtype(const char* dtype, bool quick, bool out_of_place, std::int64_t l2_bytes) {
  const struct {
    const char* name;
    void (*launch)(Params, int);
    int waves;
  } variants[] = {{"library",
                   launch_instance<T, head_unroll<RopeStyle::kNeox>(), min_blocks_per_sm<RopeStyle::kNeox>(), true>,
                   kTargetWaves},
                  {"idx64",
                   launch_instance<T, head_unroll<RopeStyle::kNeox>(), min_blocks_per_sm<RopeStyle::kNeox>(), false>,
                   kTargetWaves},
                  {"idx32_w2", launch_instance<T, 1, 4, true>, 2},
                  {"idx32_w4", launch_instance<T, 1, 4, true>, 4},
                  {"idx32_w8", launch_instance<T, 1, 4, true>, 8},
                  {"idx32_u2mb3", launch_instance<T, 2, 3, true>, kTargetWaves},
                  {"balanced", launch_balanced<T>, kTargetWaves}};
  int failures = 0;
  struct Shape {
    int batch, seq, hq, hk, d;
  };
  std::vector<Shape> shapes;
  for (const int batch : {1, 8}) {
    for (const int seq : quick ? std::vector<int>{1024, 4096} : std::vector<int>{512, 1024, 2048, 4096}) {
      shapes.push_back({batch, seq, 32, 32, 64});
      shapes.push_back({batch, seq, 32, 32, 128});
      shapes.push_back({batch, seq, 32, 8, 128});
    }
  }
  for (const Shape& sh : shapes) {
    const std::int64_t qn = std::int64_t(sh.batch) * sh.hq * sh.seq * sh.d;
    const std::int64_t kn = std::int64_t(sh.batch) * sh.hk * sh.seq * sh.d;
    const std::int64_t bytes = 2 * (qn + kn) * std::int64_t(sizeof(T));
    const int sets = sweep::rotation_sets(bytes, l2_bytes);
    std::vector<T*> q(sets), k(sets), copy_dst(sets), out(sets);
    for (int s = 0; s < sets; ++s) {
      FK_CUDA_CHECK(cudaMalloc(&q[s], qn * sizeof(T)));
      FK_CUDA_CHECK(cudaMalloc(&k[s], kn * sizeof(T)));
      FK_CUDA_CHECK(cudaMalloc(&copy_dst[s], (qn + kn) * sizeof(T)));
      // Out of place: q's rotated rows, then k's (a buffer of its own, not the copy's destination).
      out[s] = q[s];
      if (out_of_place) FK_CUDA_CHECK(cudaMalloc(&out[s], (qn + kn) * sizeof(T)));
    }
    float *cos_t, *sin_t;
    const int half = sh.d / 2;
    FK_CUDA_CHECK(cudaMalloc(&cos_t, std::int64_t(sh.seq) * half * sizeof(float)));
    FK_CUDA_CHECK(cudaMalloc(&sin_t, std::int64_t(sh.seq) * half * sizeof(float)));
    table_kernel<<<256, 256>>>(cos_t, sin_t, sh.seq, half);
    FK_CUDA_CHECK(cudaGetLastError());
    auto params = [&](int s) {
      const std::int64_t nd = std::int64_t(sh.seq) * sh.d;
      T* q_out = out_of_place ? out[s] : q[s];
      T* k_out = out_of_place ? out[s] + qn : k[s];
      flashkernel::RopeTensor tq{q[s], q_out, sh.hq, sh.hq * nd, nd, sh.d, sh.hq * nd, nd, sh.d};
      flashkernel::RopeTensor tk{k[s], k_out, sh.hk, sh.hk * nd, nd, sh.d, sh.hk * nd, nd, sh.d};
      Params p = make_params(tq, tk, flashkernel::RopeShape{sh.batch, sh.seq, sh.d, sh.d}, {});
      p.cos = cos_t;
      p.sin = sin_t;
      p.table_positions = sh.seq;
      return p;
    };
    const float copy_us = sweep::time_us([&](int s) {
      FK_CUDA_CHECK(cudaMemcpyAsync(copy_dst[s], q[s], qn * sizeof(T), cudaMemcpyDeviceToDevice));
      FK_CUDA_CHECK(cudaMemcpyAsync(copy_dst[s] + qn, k[s], kn * sizeof(T), cudaMemcpyDeviceToDevice));
    }, sets);
    // The check: every variant rotates the same fresh input once; results must equal the library's.
    std::vector<T> ref_q(qn), got_q(qn);
    for (const auto& v : variants) {
      sweep::fill(q[0], qn, 7u);
      sweep::fill(k[0], kn, 8u);
      v.launch(params(0), v.waves);
      FK_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<T>& dst = (&v == &variants[0]) ? ref_q : got_q;
      FK_CUDA_CHECK(cudaMemcpy(dst.data(), out[0], qn * sizeof(T), cudaMemcpyDeviceToHost));
      if (&v != &variants[0] && std::memcmp(ref_q.data(), got_q.data(), qn * sizeof(T)) != 0) {
        std::fprintf(stderr, "MISMATCH %s %s B=%d N=%d d=%d\n", dtype, v.name, sh.batch, sh.seq, sh.d);
        ++failures;
      }
      const float us = sweep::time_us([&](int s) { v.launch(params(s), v.waves); }, sets);
      std::printf("%s,%d,%d,%d,%d,%d,%s,%.2f,%.3f\n", dtype, sh.batch, sh.seq, sh.hq, sh.hk, sh.d, v.name, us,
                  copy_us / us);
    }
    std::fflush(stdout);
    for (int s = 0; s < sets; ++s) {
      FK_CUDA_CHECK(cudaFree(q[s]));
      FK_CUDA_CHECK(cudaFree(k[s]));
      FK_CUDA_CHECK(cudaFree(copy_dst[s]));
      if (out_of_place) FK_CUDA_CHECK(cudaFree(out[s]));
    }
    FK_CUDA_CHECK(cudaFree(cos_t));
    FK_CUDA_CHECK(cudaFree(sin_t));
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  return sweep::run_sweep(argc, argv, "rope_variants_bench", "dtype,B,N,Hq,Hk,d,variant,us,ratio_copy",
                          [](auto tag, const char* dtype, const sweep::Setup& s) {
                            return run_dtype<decltype(tag)>(dtype, s.quick, s.flag("--out-of-place"),
                                                            s.prop.l2CacheSize);
                          });
}
