// Instantiations of the weight-streaming (M <= 64) gelu_linear kernel: MT in {1, 2, 4} (16-row
// tiles of M) x NT in {1, 4} (8-column tiles per CTA) x 2 dtypes, each with the deep ring and,
// where that exceeds a smaller opt-in limit, the rings that fit sm_86/89 and sm_75
// (gelu_linear_config.h); and the TMA-filled M <= 16 kernel (sm_90) at NT in {2, 4, 8}.
#include <string>

#include "common/dependent_launch.cuh"
#include "gelu_linear/gelu_linear_kernels.cuh"
#include "gelu_linear/gelu_linear_launch.cuh"

namespace flashkernel::gelu_linear_detail {
namespace {

template <typename T, typename Cfg>
void launch_small_m_with(const Problem& p, cudaStream_t stream) {
  constexpr auto kernel = gelu_linear_small_m_kernel<T, Cfg>;
  ensure_smem_opt_in<kernel>(Cfg::SMEM_BYTES);
  const unsigned grid = static_cast<unsigned>(detail::ceil_div(p.n, Cfg::ROWS_W));
  Problem q = p;
  q.prefetch_w_l2 = pdl::dependent_launches();
  pdl::launch(kernel, grid, dim3(Cfg::THREADS), Cfg::SMEM_BYTES, stream, q);
  FK_CHECK_LAUNCH();
}

}  // namespace

template <typename T, int MT, int NT>
void launch_small_m(const Problem& p, int smem_optin_bytes, cudaStream_t stream) {
  static_assert(SmallMConfig<MT, NT, kSmallMCompactBudget>::SMEM_BYTES <= detail::kMinSmemOptinBytes,
                "small_m: compact ring must fit every GPU from sm_80 on");
  const int budget = small_m_budget<MT, NT>(smem_optin_bytes);
  if (budget == kSmallMDeepBudget) {
    launch_small_m_with<T, SmallMConfig<MT, NT, kSmallMDeepBudget>>(p, stream);
  } else if (budget == kSmallMCompactBudget) {
    launch_small_m_with<T, SmallMConfig<MT, NT, kSmallMCompactBudget>>(p, stream);
  } else if constexpr (small_m_stages(MT, NT, kSmallMSm75Budget) >= 2) {  // only the tiles that fit sm_75
    launch_small_m_with<T, SmallMConfig<MT, NT, kSmallMSm75Budget>>(p, stream);
  } else {
    throw Error("flashkernel: gelu_linear's M <= " + std::to_string(16 * MT) +
                " tiles need more shared memory than this GPU allows (" + std::to_string(smem_optin_bytes) +
                " bytes per block)");
  }
}

template <typename T, int NT>
bool launch_small_m_tma(const Problem& p, int smem_optin_bytes, cudaStream_t stream) {
  using Cfg = SmallMConfig<1, NT, kSmallMDeepBudget, 4, SmallMCopy::kTensorMaps>;
  constexpr auto kernel = gelu_linear_small_m_tma_kernel<T, Cfg>;
  if (Cfg::SMEM_BYTES > smem_optin_bytes || !detail::kernel_has_sm90a_code<kernel>()) return false;
  SmallMMaps maps;
  if (!make_matrix_map(&maps.x, p.x, dtype_of<T>(), p.m, p.k, Cfg::ROWS_X) ||
      !make_matrix_map(&maps.w, p.w, dtype_of<T>(), p.n, p.k, Cfg::ROWS_W)) {
    return false;
  }
  ensure_smem_opt_in<kernel>(Cfg::SMEM_BYTES);
  const unsigned grid = static_cast<unsigned>(detail::ceil_div(p.n, Cfg::ROWS_W));
  Problem q = p;
  q.prefetch_w_l2 = pdl::dependent_launches();
  pdl::launch(kernel, grid, dim3(Cfg::THREADS), Cfg::SMEM_BYTES, stream, q, maps);
  FK_CHECK_LAUNCH();
  return true;
}

template <typename T, int MT>
bool launch_small_m_for(const Problem& p, int sm_count, int smem_optin, cudaStream_t stream) {
  if constexpr (MT == 1) {  // sm_90: the ring filled by TMA (small_m_tma_nt)
    const int nt = small_m_tma_nt(p.n, sm_count);
    if (nt == 8 ? launch_small_m_tma<T, 8>(p, smem_optin, stream)
        : nt == 4 ? launch_small_m_tma<T, 4>(p, smem_optin, stream)
                  : launch_small_m_tma<T, 2>(p, smem_optin, stream)) {
      return true;
    }
  }
  if (small_m_thread_nt(p.n, sm_count) == 4 && small_m_budget<MT, 4>(smem_optin) > 0) {
    launch_small_m<T, MT, 4>(p, smem_optin, stream);
  } else if (small_m_budget<MT, 1>(smem_optin) > 0) {
    launch_small_m<T, MT, 1>(p, smem_optin, stream);
  } else {
    return false;
  }
  return true;
}

#define FK_GELU_LINEAR_SMALL_M(T)                                             \
  template void launch_small_m<T, 1, 1>(const Problem&, int, cudaStream_t);   \
  template void launch_small_m<T, 2, 1>(const Problem&, int, cudaStream_t);   \
  template void launch_small_m<T, 4, 1>(const Problem&, int, cudaStream_t);   \
  template void launch_small_m<T, 1, 4>(const Problem&, int, cudaStream_t);   \
  template void launch_small_m<T, 2, 4>(const Problem&, int, cudaStream_t);   \
  template void launch_small_m<T, 4, 4>(const Problem&, int, cudaStream_t);   \
  template bool launch_small_m_tma<T, 2>(const Problem&, int, cudaStream_t); \
  template bool launch_small_m_tma<T, 4>(const Problem&, int, cudaStream_t); \
  template bool launch_small_m_tma<T, 8>(const Problem&, int, cudaStream_t); \
  template bool launch_small_m_for<T, 1>(const Problem&, int, int, cudaStream_t); \
  template bool launch_small_m_for<T, 2>(const Problem&, int, int, cudaStream_t); \
  template bool launch_small_m_for<T, 4>(const Problem&, int, int, cudaStream_t);
FK_GELU_LINEAR_SMALL_M(__half)
FK_GELU_LINEAR_SMALL_M(__nv_bfloat16)
#undef FK_GELU_LINEAR_SMALL_M

}  // namespace flashkernel::gelu_linear_detail
