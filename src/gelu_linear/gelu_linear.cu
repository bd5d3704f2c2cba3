// gelu_linear: argument checks and the choice of kernel (see gelu_linear_kernels.cuh).
#include <climits>
#include <string>
#include <utility>

#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/launch.h"
#include "common/vector_io.cuh"
#include "flashkernel/gelu_linear.h"
#include "gelu_linear/gelu_linear_kernels.cuh"

namespace flashkernel {

using namespace gelu_linear_detail;

namespace {

// Above this M a 16-row-padded streaming pass stops being cheaper than real GEMM tiles.
constexpr std::int64_t kSmallMMax = 64;

}  // namespace

void gelu_linear(const void* x, const void* weight, const void* bias, void* out, std::int64_t m, std::int64_t n,
                 std::int64_t k, DType dtype, GeluApproximation approximate, cudaStream_t stream,
                 GeluLinearBackend backend) {
  constexpr const char* kOp = "gelu_linear";
  detail::require(m >= 0, kOp, "m", "must be >= 0, got " + std::to_string(m));
  detail::require(n > 0 && n % 8 == 0, kOp, "n",
                  "(out_features) must be a positive multiple of 8 (16-byte rows), got " + std::to_string(n));
  detail::require(k > 0 && k % 8 == 0, kOp, "k",
                  "(in_features) must be a positive multiple of 8 (16-byte rows), got " + std::to_string(k));
  // The kernels' tile arithmetic is 32-bit (m + BM - 1 and the like): above kMaxExtent it would
  // wrap and the launch would silently compute nothing.
  for (const auto& [value, name] : {std::pair{m, "m"}, std::pair{n, "n"}, std::pair{k, "k"}}) {
    detail::require(value <= kMaxExtent, kOp, name,
                    "must be at most " + std::to_string(kMaxExtent) + " (2^31 - 256), got " + std::to_string(value));
  }
  // One CTA (or persistent work item) per output tile, the smallest being 64 x 64: the count must
  // stay a valid 32-bit grid size.
  detail::require(detail::ceil_div(m, 64) * detail::ceil_div(n, 64) <= INT_MAX, kOp, "m",
                  "times n is too large: more than 2^31 - 1 output tiles of 64 x 64");
  detail::require(approximate == GeluApproximation::kNone || approximate == GeluApproximation::kTanh, kOp,
                  "approximate", "must be kNone or kTanh");
  detail::require(int(backend) >= int(GeluLinearBackend::kAuto) && int(backend) <= int(GeluLinearBackend::kSm90PingPong),
                  kOp, "backend", "must be a GeluLinearBackend (0..5), got " + std::to_string(int(backend)));
  detail::require(dtype == DType::kFloat16 || dtype == DType::kBFloat16, kOp, "dtype",
                  std::string("must be float16 or bfloat16, got ") + dtype_name(dtype));
  detail::require_device_pointer(weight, n * k, kOp, "weight");
  detail::require_device_pointer(x, m * k, kOp, "x");
  detail::require_device_pointer(out, m * n, kOp, "out");
  // cp.async moves 16-byte chunks and the epilogue stores 4-byte pairs.
  detail::require(is_aligned(weight), kOp, "weight", "must be 16-byte aligned");
  detail::require(m == 0 || is_aligned(x), kOp, "x", "must be 16-byte aligned");
  detail::require(m == 0 || is_aligned(out), kOp, "out", "must be 16-byte aligned");
  detail::require(bias == nullptr || is_aligned(bias, 2), kOp, "bias", "must be aligned to its 2-byte elements");
  if (m == 0) return;
  detail::require_tensor_core_dtype(kOp, dtype);  // every kernel here is mma.sync or wgmma

  const Problem p{x, weight, bias, out, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), approximate};
  const int sm_count = detail::current_sm_count();
  const int smem_optin = detail::current_smem_optin_bytes();
  dispatch_half_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const bool small_m = m <= 16          ? launch_small_m_for<T, 1>(p, sm_count, smem_optin, stream)
                         : m <= 32          ? launch_small_m_for<T, 2>(p, sm_count, smem_optin, stream)
                         : m <= kSmallMMax ? launch_small_m_for<T, 4>(p, sm_count, smem_optin, stream)
                                           : false;
    if (!small_m) {
      // Large tiles when they alone give every SM at least one CTA; otherwise 4x as many small ones.
      // On Hopper the wgmma kernel already wins with half the SMs busy: its 128x128 tile runs
      // at >2x the rate of a 64x64 mma.sync tile per SM.
      const std::int64_t large_tiles = detail::ceil_div(m, TiledLarge::BM) * detail::ceil_div(n, TiledLarge::BN);
      const bool hopper = detail::current_compute_major() == 9;
      if (backend != GeluLinearBackend::kAuto && backend != GeluLinearBackend::kSm80) {  // one Hopper variant
        detail::require(hopper, kOp, "backend", "the sm90 kernels need a compute capability 9.x GPU (H100/H200)");
        detail::require(launch_wgmma_ws<T>(p, sm_count, stream, backend), kOp, "backend",
                        "the sm90 kernel cannot run here (a build without sm_90a, or tensors TMA cannot describe)");
        return;
      }
      if (backend == GeluLinearBackend::kAuto && hopper && 2 * large_tiles >= sm_count &&
          launch_wgmma_ws<T>(p, sm_count, stream, backend)) {
        return;
      }
      if (large_tiles >= sm_count && tiled_large_fits(smem_optin)) {
        launch_tiled<T, TiledLarge>(p, stream);
        return;
      }
      // Too few 64x64 tiles to fill the GPU (mid-sized M, short N): on Hopper split K over a cluster.
      const std::int64_t small_tiles = detail::ceil_div(m, TiledSmall::BM) * detail::ceil_div(n, TiledSmall::BN);
      const int split = tiled_split_k(small_tiles, k, sm_count);
      if (backend == GeluLinearBackend::kAuto && hopper && split > 1 && launch_tiled_split<T>(p, split, stream)) {
        return;
      }
      launch_tiled<T, TiledSmall>(p, stream);
    }
  });
}

}  // namespace flashkernel
