// Instantiations of the weight-streaming (M <= 64) gelu_linear kernel: MT in {1, 2, 4} (16-row
// tiles of M) x NT in {1, 4} (8-column tiles per CTA) x 2 dtypes.
#include "gelu_linear/gelu_linear_kernels.cuh"
#include "gelu_linear/gelu_linear_launch.cuh"

namespace flashkernel::gelu_linear_detail {

template <typename T, typename Cfg>
void launch_small_m(const Problem& p, cudaStream_t stream) {
  constexpr auto kernel = gelu_linear_small_m_kernel<T, Cfg>;
  ensure_smem_opt_in<kernel>(Cfg::SMEM_BYTES);
  const unsigned grid = static_cast<unsigned>((p.n + Cfg::ROWS_W - 1) / Cfg::ROWS_W);
  kernel<<<grid, Cfg::THREADS, Cfg::SMEM_BYTES, stream>>>(p);
  FK_CHECK_LAUNCH();
}

#define FK_GELU_LINEAR_SMALL_M(T)                                                        \
  template void launch_small_m<T, SmallMConfig<1, 1>>(const Problem&, cudaStream_t);     \
  template void launch_small_m<T, SmallMConfig<2, 1>>(const Problem&, cudaStream_t);     \
  template void launch_small_m<T, SmallMConfig<4, 1>>(const Problem&, cudaStream_t);     \
  template void launch_small_m<T, SmallMConfig<1, 4>>(const Problem&, cudaStream_t);     \
  template void launch_small_m<T, SmallMConfig<2, 4>>(const Problem&, cudaStream_t);     \
  template void launch_small_m<T, SmallMConfig<4, 4>>(const Problem&, cudaStream_t);
FK_GELU_LINEAR_SMALL_M(__half)
FK_GELU_LINEAR_SMALL_M(__nv_bfloat16)
#undef FK_GELU_LINEAR_SMALL_M

}  // namespace flashkernel::gelu_linear_detail
