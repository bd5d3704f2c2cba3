// Instantiations of the tiled (M > 64) gelu_linear kernel: 2 configs x 2 dtypes, and the 64x64
// tile split over K across a cluster of 2, 4 or 8 CTAs (sm_90).
#include "gelu_linear/gelu_linear_kernels.cuh"
#include "gelu_linear/gelu_linear_launch.cuh"

namespace flashkernel::gelu_linear_detail {

template <typename T, typename Cfg>
void launch_tiled(const Problem& p, cudaStream_t stream) {
  constexpr auto kernel = gelu_linear_tiled_kernel<T, Cfg>;
  ensure_smem_opt_in<kernel>(Cfg::SMEM_BYTES);
  const std::int64_t tiles = detail::ceil_div(p.m, Cfg::BM) * detail::ceil_div(p.n, Cfg::BN);
  kernel<<<static_cast<unsigned>(tiles), Cfg::THREADS, Cfg::SMEM_BYTES, stream>>>(p);
  FK_CHECK_LAUNCH();
}

namespace {

template <typename T, int kSplit>
bool launch_tiled_split_with(const Problem& p, cudaStream_t stream) {
  using Cfg = TiledSmall;
  constexpr auto kernel = gelu_linear_tiled_kernel<T, Cfg, kSplit>;
  if (!detail::kernel_has_sm90a_code<kernel>()) return false;  // clusters: sm_90 code only
  ensure_smem_opt_in<kernel>(Cfg::SMEM_BYTES);
  const std::int64_t tiles = detail::ceil_div(p.m, Cfg::BM) * detail::ceil_div(p.n, Cfg::BN);
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = kSplit;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(tiles * kSplit));
  config.blockDim = dim3(Cfg::THREADS);
  config.dynamicSmemBytes = Cfg::SMEM_BYTES;
  config.stream = stream;
  config.attrs = &cluster;
  config.numAttrs = 1;
  FK_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, p));
  return true;
}

}  // namespace

template <typename T>
bool launch_tiled_split(const Problem& p, int split, cudaStream_t stream) {
  if ((p.k + TiledSmall::BK - 1) / TiledSmall::BK < split) return false;  // every CTA needs a k-tile
  switch (split) {
    case 2: return launch_tiled_split_with<T, 2>(p, stream);
    case 4: return launch_tiled_split_with<T, 4>(p, stream);
    case 8: return launch_tiled_split_with<T, 8>(p, stream);
    default: return false;
  }
}

template bool launch_tiled_split<__half>(const Problem&, int, cudaStream_t);
template bool launch_tiled_split<__nv_bfloat16>(const Problem&, int, cudaStream_t);
template void launch_tiled<__half, TiledLarge>(const Problem&, cudaStream_t);
template void launch_tiled<__half, TiledSmall>(const Problem&, cudaStream_t);
template void launch_tiled<__nv_bfloat16, TiledLarge>(const Problem&, cudaStream_t);
template void launch_tiled<__nv_bfloat16, TiledSmall>(const Problem&, cudaStream_t);

}  // namespace flashkernel::gelu_linear_detail
