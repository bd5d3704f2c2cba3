// gelu_linear on Hopper: the tiled design of gelu_linear_kernels.cuh with the math moved from
// warp-level mma.sync to warpgroup wgmma (sm_90a), which reads both operands straight from shared
// memory. A CTA of two warpgroups computes a 128x128 tile (each warpgroup 64x128 with
// wgmma.m64n128k16, 64 fp32 accumulators per thread); x and W stream through a 3-stage cp.async
// ring laid out in the 128-byte swizzle wgmma's descriptors describe (the same XOR swizzle the
// sm_80 kernel uses, on a 1024-byte aligned base). 3 x 32 KiB stages: two CTAs per SM, so one
// CTA's barrier and epilogue overlap the other's math.
#include "common/wgmma_sm90.cuh"
#include "gelu_linear/gelu_linear_kernels.cuh"
#include "gelu_linear/gelu_linear_launch.cuh"

namespace flashkernel::gelu_linear_detail {
namespace {

constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 3, kThreads = 256;
constexpr int kSmemBytes = kStages * (kBM + kBN) * kBK * 2 + 1024;  // + room to align to 1024

template <typename T>
__global__ void __launch_bounds__(kThreads, 2) gelu_linear_wgmma_kernel(Problem p) {
#if FK_WGMMA_AVAILABLE
  using Tile = SwizzledTile<kBK>;
  extern __shared__ unsigned char smem_raw[];
  // wgmma's 128-byte swizzle is anchored to 1024-byte boundaries (one 8-row atom).
  const std::uintptr_t base = (reinterpret_cast<std::uintptr_t>(smem_raw) + 1023) & ~std::uintptr_t(1023);
  T* s_a = reinterpret_cast<T*>(base);  // [kStages][kBM][kBK]
  T* s_b = s_a + kStages * kBM * kBK;   // [kStages][kBN][kBK]

  const int m = p.m, n = p.n, k = p.k;
  int m0, n0;
  grouped_tile_origin<kBM, kBN>(m, n, blockIdx.x, m0, n0);
  const int tid = threadIdx.x, lane = tid % 32;
  const int wg = tid / 128, warp_in_wg = (tid % 128) / 32;

  TileLoader<T, kBM, kBN, kBK, kThreads> loader(p, m0, n0, tid);
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;

  const int k_tiles = (k + kBK - 1) / kBK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) loader.load(s_a + s * kBM * kBK, s_b + s * kBN * kBK, s * kBK);
    cp_async_commit();
  }
  for (int kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    fence_proxy_async_shared();  // cp.async wrote through the generic proxy; wgmma reads via async
    __syncthreads();             // every thread's copies of tile kt, and both warpgroups done with kt-1
    const int next = kt + kStages - 1;
    if (next < k_tiles) {
      const int slot = next % kStages;
      loader.load(s_a + slot * kBM * kBK, s_b + slot * kBN * kBK, next * kBK);
    }
    cp_async_commit();

    const int slot = kt % kStages;
    const std::uint64_t da = wgmma_desc_sw128(s_a + slot * kBM * kBK + wg * 64 * kBK);
    const std::uint64_t db = wgmma_desc_sw128(s_b + slot * kBN * kBK);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      wgmma_ss<128, std::is_same_v<T, __nv_bfloat16>>(acc, wgmma_desc_advance(da, kk * 32),
                                                           wgmma_desc_advance(db, kk * 32), true);
    }
    wgmma_commit_group();
    wgmma_wait_group<0>();  // the slot is refilled next iteration
  }
  cp_async_wait<0>();

  T* out = static_cast<T*>(p.out);
  const T* bias = static_cast<const T*>(p.bias);
  const int row = m0 + wg * 64 + warp_in_wg * 16 + lane / 4;
  with_gelu_form(p.act, [&](auto form) {
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j) {
      const int col = n0 + j * 8 + (lane % 4) * 2;
      store_pair<decltype(form)::value>(out, bias, row, col, m, n, acc[4 * j], acc[4 * j + 1]);
      store_pair<decltype(form)::value>(out, bias, row + 8, col, m, n, acc[4 * j + 2], acc[4 * j + 3]);
    }
  });
#else
  __trap();  // never launched: the host checks the kernel was built for sm_90a
#endif
}

}  // namespace

template <typename T>
bool launch_wgmma(const Problem& p, cudaStream_t stream) {
  constexpr auto kernel = gelu_linear_wgmma_kernel<T>;
  if (!detail::kernel_has_sm90a_code<kernel>()) return false;
  ensure_smem_opt_in<kernel>(kSmemBytes);
  const std::int64_t tiles = std::int64_t((p.m + kBM - 1) / kBM) * ((p.n + kBN - 1) / kBN);
  kernel<<<static_cast<unsigned>(tiles), kThreads, kSmemBytes, stream>>>(p);
  FK_CHECK_LAUNCH();
  return true;
}

template bool launch_wgmma<__half>(const Problem&, cudaStream_t);
template bool launch_wgmma<__nv_bfloat16>(const Problem&, cudaStream_t);

}  // namespace flashkernel::gelu_linear_detail
