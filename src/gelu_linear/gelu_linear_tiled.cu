// Instantiations of the tiled (M > 64) gelu_linear kernel: 2 configs x 2 dtypes.
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

template void launch_tiled<__half, TiledLarge>(const Problem&, cudaStream_t);
template void launch_tiled<__half, TiledSmall>(const Problem&, cudaStream_t);
template void launch_tiled<__nv_bfloat16, TiledLarge>(const Problem&, cudaStream_t);
template void launch_tiled<__nv_bfloat16, TiledSmall>(const Problem&, cudaStream_t);

}  // namespace flashkernel::gelu_linear_detail
