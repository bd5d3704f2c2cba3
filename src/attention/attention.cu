// flash_attention launcher: validates arguments (naming the bad one) and picks a kernel path.
// Paths are keyed by architecture and head_dim; today every GPU takes the portable sm80 path
// (mma.sync, runs on sm_80 and newer). A Hopper path slots in by adding a branch to
// select_path() and a launch function next to sm80's in attention_params.h.
#include <cmath>
#include <cstdint>
#include <string>

#include "attention/attention_params.h"
#include "common/arg_check.h"
#include "common/vector_io.cuh"
#include "flashkernel/attention.h"

namespace flashkernel {
namespace {

constexpr const char* kOp = "flash_attention";

void require_strides(const std::int64_t (&stride)[3], const char* name) {
  for (int i = 0; i < 3; ++i) {
    detail::require(stride[i] >= 0 && stride[i] % 8 == 0, kOp, name,
                    "strides must be non-negative multiples of 8 elements (16-byte rows), got " +
                        std::to_string(stride[i]) + " in dimension " + std::to_string(i));
  }
}

using LaunchFn = void (*)(const attention::Params&, DType, cudaStream_t);

LaunchFn select_path(std::int64_t head_dim) {
  switch (head_dim) {
    case 64: return attention::sm80::launch_d64;
    case 128: return attention::sm80::launch_d128;
    default: return nullptr;
  }
}

}  // namespace

void flash_attention(const void* q, const void* k, const void* v, void* out, float* lse, const AttentionShape& s,
                     DType dtype, bool causal, float scale, cudaStream_t stream) {
  detail::require(dtype == DType::kFloat16 || dtype == DType::kBFloat16, kOp, "dtype",
                  std::string("must be float16 or bfloat16, got ") + dtype_name(dtype));
  detail::require(s.head_dim == 64 || s.head_dim == 128, kOp, "head_dim",
                  "must be 64 or 128, got " + std::to_string(s.head_dim));
  detail::require(s.batch >= 0 && s.batch <= 65535, kOp, "batch", "must be in [0, 65535], got " + std::to_string(s.batch));
  detail::require(s.heads_kv >= 1, kOp, "heads_kv", "must be >= 1, got " + std::to_string(s.heads_kv));
  detail::require(s.heads_q >= 1 && s.heads_q <= 65535, kOp, "heads_q",
                  "must be in [1, 65535], got " + std::to_string(s.heads_q));
  detail::require(s.heads_q % s.heads_kv == 0, kOp, "heads_q",
                  "must be a multiple of heads_kv (" + std::to_string(s.heads_kv) + "), got " + std::to_string(s.heads_q));
  // 32-bit row indices inside the kernel.
  detail::require(s.seq_q >= 0 && s.seq_q < (std::int64_t(1) << 30), kOp, "seq_q",
                  "must be in [0, 2^30), got " + std::to_string(s.seq_q));
  detail::require(s.seq_k >= 0 && s.seq_k < (std::int64_t(1) << 30), kOp, "seq_k",
                  "must be in [0, 2^30), got " + std::to_string(s.seq_k));
  detail::require(std::isfinite(scale), kOp, "scale", "must be finite");
  if (s.batch == 0 || s.seq_q == 0) return;
  const std::int64_t n = s.batch * s.heads_q * s.seq_q * s.head_dim;
  detail::require_device_pointer(q, n, kOp, "q");
  detail::require_device_pointer(k, s.seq_k, kOp, "k");
  detail::require_device_pointer(v, s.seq_k, kOp, "v");
  detail::require_device_pointer(out, n, kOp, "out");
  detail::require(is_aligned(q) && is_aligned(out) && (s.seq_k == 0 || (is_aligned(k) && is_aligned(v))), kOp,
                  !is_aligned(q) ? "q" : !is_aligned(out) ? "out" : !is_aligned(k) ? "k" : "v",
                  "must be 16-byte aligned");
  require_strides(s.q_stride, "q");
  require_strides(s.k_stride, "k");
  require_strides(s.v_stride, "v");
  require_strides(s.o_stride, "out");

  attention::Params p{q, k, v, out, lse, s, causal, scale};
  select_path(s.head_dim)(p, dtype, stream);
}

}  // namespace flashkernel
