// Instantiations of the weight-streaming (M <= 64) gelu_linear kernel: MT in {1, 2, 4} (16-row
// tiles of M) x NT in {1, 4} (8-column tiles per CTA) x 2 dtypes, each with the deep ring and,
// where that exceeds the smallest opt-in limit, a compact one (gelu_linear_config.h).
#include "gelu_linear/gelu_linear_kernels.cuh"
#include "gelu_linear/gelu_linear_launch.cuh"

namespace flashkernel::gelu_linear_detail {
namespace {

template <typename T, typename Cfg>
void launch_small_m_with(const Problem& p, cudaStream_t stream) {
  constexpr auto kernel = gelu_linear_small_m_kernel<T, Cfg>;
  ensure_smem_opt_in<kernel>(Cfg::SMEM_BYTES);
  const unsigned grid = static_cast<unsigned>(detail::ceil_div(p.n, Cfg::ROWS_W));
  kernel<<<grid, Cfg::THREADS, Cfg::SMEM_BYTES, stream>>>(p);
  FK_CHECK_LAUNCH();
}

}  // namespace

template <typename T, int MT, int NT>
void launch_small_m(const Problem& p, int smem_optin_bytes, cudaStream_t stream) {
  using Compact = SmallMConfig<MT, NT, kSmallMCompactBudget>;
  static_assert(Compact::SMEM_BYTES <= detail::kMinSmemOptinBytes, "small_m: compact ring must fit every GPU");
  if (small_m_uses_deep_ring<MT, NT>(smem_optin_bytes)) {
    launch_small_m_with<T, SmallMConfig<MT, NT, kSmallMDeepBudget>>(p, stream);
  } else {
    launch_small_m_with<T, Compact>(p, stream);
  }
}

#define FK_GELU_LINEAR_SMALL_M(T)                                             \
  template void launch_small_m<T, 1, 1>(const Problem&, int, cudaStream_t);   \
  template void launch_small_m<T, 2, 1>(const Problem&, int, cudaStream_t);   \
  template void launch_small_m<T, 4, 1>(const Problem&, int, cudaStream_t);   \
  template void launch_small_m<T, 1, 4>(const Problem&, int, cudaStream_t);   \
  template void launch_small_m<T, 2, 4>(const Problem&, int, cudaStream_t);   \
  template void launch_small_m<T, 4, 4>(const Problem&, int, cudaStream_t);
FK_GELU_LINEAR_SMALL_M(__half)
FK_GELU_LINEAR_SMALL_M(__nv_bfloat16)
#undef FK_GELU_LINEAR_SMALL_M

}  // namespace flashkernel::gelu_linear_detail
