// flash_attention launcher: validates arguments (naming the bad one) and picks a kernel path by
// architecture and head_dim: the Hopper path (sm90/, TMA + wgmma) on compute capability 9.x when
// it applies, the portable path (sm80/, mma.sync: sm_80 and newer, and fp16 on sm_75) otherwise.
#include <cmath>
#include <cstdint>
#include <string>

#include "attention/attention_params.h"
#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/launch.h"
#include "common/vector_io.cuh"
#include "flashkernel/attention.h"

namespace flashkernel {
namespace {

constexpr const char* kOp = "flash_attention";

void require_strides(const std::int64_t (&stride)[3], const char* name, const char* op = kOp) {
  for (int i = 0; i < 3; ++i) {
    detail::require(stride[i] >= 0 && stride[i] % 8 == 0, op, name,
                    "strides must be non-negative multiples of 8 elements (16-byte rows), got " +
                        std::to_string(stride[i]) + " in dimension " + std::to_string(i));
  }
}

// q and out hold n_q elements, k and v keys rows (0: they are not read): device pointers, 16-byte
// aligned; lse (may be null) 4-byte aligned.
void require_pointers(const char* op, const void* q, const void* k, const void* v, const void* out, const float* lse,
                      std::int64_t n_q, std::int64_t keys) {
  detail::require_device_pointer(q, n_q, op, "q");
  detail::require_device_pointer(k, keys, op, "k");
  detail::require_device_pointer(v, keys, op, "v");
  detail::require_device_pointer(out, n_q, op, "out");
  detail::require(is_aligned(q) && is_aligned(out) && (keys == 0 || (is_aligned(k) && is_aligned(v))), op,
                  !is_aligned(q) ? "q" : !is_aligned(out) ? "out" : !is_aligned(k) ? "k" : "v",
                  "must be 16-byte aligned");
  detail::require_element_aligned(lse, sizeof(float), op, "lse");
}

bool is_head_dim(std::int64_t d) { return d == 32 || d == 64 || d == 80 || d == 96 || d == 128 || d == 256; }

// The plain instances (the Hopper kernel's and the portable kernel's tuned head_dim 64/128 ones)
// cover dense batches of head_dim 64/128 without window or softcap; the rest needs an extended
// instance (the Hopper kernel's at head_dim 64/128, the portable kernel's at every head_dim).
// A window or softcap (causal arrives as window_right = 0, which the plain instances do themselves).
bool has_window_or_softcap(const attention::ExtendedParams& p) {
  return p.window_left >= 0 || (p.window_right >= 0 && !p.causal) || p.softcap > 0.f;
}

bool needs_extended(const attention::ExtendedParams& p) {
  return has_window_or_softcap(p) || p.cu_seqlens_q != nullptr ||
         (p.shape.head_dim != 64 && p.shape.head_dim != 128);
}

void launch_extended(const attention::ExtendedParams& p, DType dtype, cudaStream_t stream) {
  switch (p.shape.head_dim) {
    case 32: return attention::sm80::launch_extended_d32(p, dtype, stream);
    case 64: return attention::sm80::launch_extended_d64(p, dtype, stream);
    case 80: return attention::sm80::launch_extended_d80(p, dtype, stream);
    case 96: return attention::sm80::launch_extended_d96(p, dtype, stream);
    case 128: return attention::sm80::launch_extended_d128(p, dtype, stream);
    default: return attention::sm80::launch_extended_d256(p, dtype, stream);
  }
}

// Whether kAuto takes the Hopper kernel for what its first version did not cover (windows,
// softcap, varlen batches, head_dim 80/96/256: needs_extended). Measured on an H100
// (attention_head_dims.csv, attention_varlen.csv): 1.2-2.1x the portable kernel at d=80/96/256,
// 1.5x on windows and softcap, 1.0-1.25x on ragged varlen batches. Head dim 32 stays on the portable
// kernel: there the Hopper kernel's d=64 tiles (padded rows) measured equal at N >= 4096 and 10%
// slower at N = 1024.
bool auto_takes_sm90(const attention::ExtendedParams& p) { return !needs_extended(p) || p.shape.head_dim != 32; }

// The Hopper instance for p: the varlen one, the dense one with window and softcap, or the plain
// dense one (head_dim 32/80/96: one entry point for all three). False where it does not apply
// (launching nothing).
bool launch_sm90(const attention::ExtendedParams& p, DType dtype, cudaStream_t stream) {
  namespace sm90 = attention::sm90;
  const std::int64_t d = p.shape.head_dim;
  const bool window_or_softcap = has_window_or_softcap(p);
  switch (d) {
    case 32: return sm90::launch_padded_d32(p, window_or_softcap, dtype, stream);
    case 80: return sm90::launch_padded_d80(p, window_or_softcap, dtype, stream);
    case 96: return sm90::launch_padded_d96(p, window_or_softcap, dtype, stream);
    default: break;
  }
  if (p.cu_seqlens_q != nullptr) {
    return (d == 64 ? sm90::launch_varlen_d64 : d == 128 ? sm90::launch_varlen_d128 : sm90::launch_varlen_d256)(
        p, dtype, stream);
  }
  if (window_or_softcap) {
    return (d == 64 ? sm90::launch_extended_d64 : d == 128 ? sm90::launch_extended_d128 : sm90::launch_extended_d256)(
        p, dtype, stream);
  }
  return (d == 64 ? sm90::launch_d64 : d == 128 ? sm90::launch_d128 : sm90::launch_d256)(p, dtype, stream);
}

// Both ops' path choice: the Hopper kernel (every head_dim on a 9.x GPU; kSm90, or kAuto
// where it is the default), else the portable kernel (kSm80, or kAuto): its tuned plain instances
// or its extended ones.
void launch(const char* op, const attention::ExtendedParams& p, DType dtype, AttentionBackend backend,
            cudaStream_t stream) {
  const std::int64_t d = p.shape.head_dim;
  detail::require_tensor_core_dtype(op, dtype);  // every path is a tensor-core kernel
  const bool extended = needs_extended(p);
  if (backend == AttentionBackend::kSm90 || (backend == AttentionBackend::kAuto && auto_takes_sm90(p))) {
    const bool hopper = detail::current_compute_major() == 9;
    detail::require(backend == AttentionBackend::kAuto || hopper, op, "backend",
                    "sm90 needs a compute capability 9.x GPU (H100/H200)");
    if (hopper && launch_sm90(p, dtype, stream)) return;
    detail::require(backend == AttentionBackend::kAuto, op, "backend",
                    "the sm90 path cannot run here (a build without sm_90a, no keys, or tensors TMA cannot describe)");
  }
  if (extended) {
    launch_extended(p, dtype, stream);
  } else {
    (d == 64 ? attention::sm80::launch_d64 : attention::sm80::launch_d128)(p, dtype, stream);
  }
}

void require_backend(const char* op, AttentionBackend backend) {
  detail::require(backend == AttentionBackend::kAuto || backend == AttentionBackend::kSm80 ||
                      backend == AttentionBackend::kSm90,
                  op, "backend", "must be kAuto, kSm80 or kSm90, got " + std::to_string(int(backend)));
}

void require_common(const char* op, DType dtype, std::int64_t head_dim, std::int64_t heads_q, std::int64_t heads_kv,
                    float scale, const AttentionOptions& o) {
  detail::require(dtype == DType::kFloat16 || dtype == DType::kBFloat16, op, "dtype",
                  std::string("must be float16 or bfloat16, got ") + dtype_name(dtype));
  detail::require(is_head_dim(head_dim), op, "head_dim",
                  "must be 32, 64, 80, 96, 128 or 256, got " + std::to_string(head_dim));
  detail::require(heads_kv >= 1, op, "heads_kv", "must be >= 1, got " + std::to_string(heads_kv));
  detail::require(heads_q >= 1 && heads_q <= 65535, op, "heads_q", "must be in [1, 65535], got " + std::to_string(heads_q));
  detail::require(heads_q % heads_kv == 0, op, "heads_q",
                  "must be a multiple of heads_kv (" + std::to_string(heads_kv) + "), got " + std::to_string(heads_q));
  detail::require(std::isfinite(scale), op, "scale", "must be finite");
  detail::require(std::isfinite(o.softcap) && o.softcap >= 0.f, op, "softcap",
                  "must be finite and >= 0 (0: off), got " + std::to_string(o.softcap));
  // -1 is FlashAttention's "unbounded"; a bound below it is a mistake, not another spelling.
  detail::require(o.window_left >= -1, op, "window_left",
                  "must be >= -1 (-1: unbounded), got " + std::to_string(o.window_left));
  detail::require(o.window_right >= -1, op, "window_right",
                  "must be >= -1 (-1: unbounded), got " + std::to_string(o.window_right));
}

// The window bounds the kernel takes: negative -> -1 (unbounded), causal -> right 0. A bound that
// cannot exclude any key is unbounded too (exactly, not FlashAttention's approximation): query
// i's keys reach down to i + seq_k - seq_q - left, which is <= 0 for every i once left >= seq_k,
// and up to i + seq_k - seq_q + right >= seq_k - 1 for every i once right >= seq_q. This keeps
// the kernel's bounds below 2^30 (seq_q, seq_k are; for varlen, their maxima).
void set_window(attention::ExtendedParams& p, bool causal, const AttentionOptions& o) {
  auto bound = [](std::int64_t w, std::int64_t limit) { return w < 0 || w >= limit ? -1 : int(w); };
  p.window_left = bound(o.window_left, p.shape.seq_k);
  p.window_right = causal ? 0 : bound(o.window_right, p.shape.seq_q);
  p.softcap = o.softcap;
}

}  // namespace

void flash_attention(const void* q, const void* k, const void* v, void* out, float* lse, const AttentionShape& s,
                     DType dtype, bool causal, float scale, cudaStream_t stream, AttentionBackend backend) {
  flash_attention(q, k, v, out, lse, s, dtype, causal, scale, AttentionOptions{}, stream, backend);
}

void flash_attention(const void* q, const void* k, const void* v, void* out, float* lse, const AttentionShape& s,
                     DType dtype, bool causal, float scale, const AttentionOptions& options, cudaStream_t stream,
                     AttentionBackend backend) {
  require_common(kOp, dtype, s.head_dim, s.heads_q, s.heads_kv, scale, options);
  detail::require(s.batch >= 0 && s.batch <= 65535, kOp, "batch", "must be in [0, 65535], got " + std::to_string(s.batch));
  // 32-bit row indices inside the kernel.
  detail::require(s.seq_q >= 0 && s.seq_q < (std::int64_t(1) << 30), kOp, "seq_q",
                  "must be in [0, 2^30), got " + std::to_string(s.seq_q));
  detail::require(s.seq_k >= 0 && s.seq_k < (std::int64_t(1) << 30), kOp, "seq_k",
                  "must be in [0, 2^30), got " + std::to_string(s.seq_k));
  require_backend(kOp, backend);
  if (s.batch == 0 || s.seq_q == 0) return;
  require_pointers(kOp, q, k, v, out, lse, s.batch * s.heads_q * s.seq_q * s.head_dim, s.seq_k);
  require_strides(s.q_stride, "q");
  require_strides(s.k_stride, "k");
  require_strides(s.v_stride, "v");
  require_strides(s.o_stride, "out");

  attention::ExtendedParams p{{q, k, v, out, lse, s, causal, scale}};
  set_window(p, causal, options);
  launch(kOp, p, dtype, backend, stream);
}

void flash_attention_varlen(const void* q, const void* k, const void* v, void* out, float* lse,
                            const AttentionVarlenShape& s, DType dtype, bool causal, float scale,
                            const AttentionOptions& options, cudaStream_t stream, AttentionBackend backend) {
  constexpr const char* kVarlen = "flash_attention_varlen";
  require_common(kVarlen, dtype, s.head_dim, s.heads_q, s.heads_kv, scale, options);
  detail::require(s.batch >= 0 && s.batch <= 65535, kVarlen, "batch",
                  "must be in [0, 65535], got " + std::to_string(s.batch));
  detail::require(s.total_q >= 0 && s.total_q < (std::int64_t(1) << 30), kVarlen, "total_q",
                  "must be in [0, 2^30), got " + std::to_string(s.total_q));
  detail::require(s.total_k >= 0 && s.total_k < (std::int64_t(1) << 30), kVarlen, "total_k",
                  "must be in [0, 2^30), got " + std::to_string(s.total_k));
  detail::require(s.max_seq_q >= 0 && s.max_seq_q < (std::int64_t(1) << 30), kVarlen, "max_seq_q",
                  "must be in [0, 2^30), got " + std::to_string(s.max_seq_q));
  detail::require(s.max_seq_k >= 0 && s.max_seq_k < (std::int64_t(1) << 30), kVarlen, "max_seq_k",
                  "must be in [0, 2^30), got " + std::to_string(s.max_seq_k));
  require_backend(kVarlen, backend);
  if (s.batch == 0 || s.total_q == 0 || s.max_seq_q == 0) return;
  detail::require_device_pointer(s.cu_seqlens_q, s.batch + 1, kVarlen, "cu_seqlens_q");
  detail::require_device_pointer(s.cu_seqlens_k, s.batch + 1, kVarlen, "cu_seqlens_k");
  detail::require_element_aligned(s.cu_seqlens_q, sizeof(std::int32_t), kVarlen, "cu_seqlens_q");
  detail::require_element_aligned(s.cu_seqlens_k, sizeof(std::int32_t), kVarlen, "cu_seqlens_k");
  require_pointers(kVarlen, q, k, v, out, lse, s.total_q * s.heads_q * s.head_dim, s.total_k);
  // As the dense strides, {batch = unused, head, token}.
  AttentionShape d;
  d.batch = s.batch;
  d.heads_q = s.heads_q;
  d.heads_kv = s.heads_kv;
  d.seq_q = s.max_seq_q;
  d.seq_k = s.max_seq_k;
  d.head_dim = s.head_dim;
  const std::int64_t* src[4] = {s.q_stride, s.k_stride, s.v_stride, s.o_stride};
  std::int64_t* dst[4] = {d.q_stride, d.k_stride, d.v_stride, d.o_stride};
  for (int i = 0; i < 4; ++i) {
    dst[i][0] = 0;
    dst[i][1] = src[i][1];
    dst[i][2] = src[i][0];
  }
  require_strides(d.q_stride, "q", kVarlen);
  require_strides(d.k_stride, "k", kVarlen);
  require_strides(d.v_stride, "v", kVarlen);
  require_strides(d.o_stride, "out", kVarlen);
  attention::ExtendedParams p{{q, k, v, out, lse, d, causal, scale}};
  set_window(p, causal, options);
  p.cu_seqlens_q = s.cu_seqlens_q;
  p.cu_seqlens_k = s.cu_seqlens_k;
  p.total_q = static_cast<int>(s.total_q);
  p.total_k = static_cast<int>(s.total_k);
  launch(kVarlen, p, dtype, backend, stream);
}

bool paged_prefill_attention(const PagedPrefillArgs& a, cudaStream_t stream) {
  constexpr const char* kPaged = "paged_prefill_attention";
  validate_kv_layout(a.layout, kPaged);
  const KVCacheLayout& L = a.layout;
  if (L.quantized()) return false;  // the kernel reads 16-bit pages only
  const DType dtype = L.dtype;
  require_common(kPaged, dtype, L.head_dim, a.heads_q, L.num_kv_heads, a.scale, a.options);
  detail::require(a.layer >= 0 && a.layer < L.num_layers, kPaged, "layer",
                  "must be in [0, " + std::to_string(L.num_layers) + "), got " + std::to_string(a.layer));
  detail::require(a.batch >= 0 && a.batch <= 65535, kPaged, "batch", "must be in [0, 65535], got " + std::to_string(a.batch));
  detail::require(a.total_q >= 0 && a.total_q < (std::int64_t(1) << 30), kPaged, "total_q",
                  "must be in [0, 2^30), got " + std::to_string(a.total_q));
  detail::require(a.max_seq_q >= 0 && a.max_seq_q < (std::int64_t(1) << 30), kPaged, "max_seq_q",
                  "must be in [0, 2^30), got " + std::to_string(a.max_seq_q));
  detail::require(a.max_pages >= 0 && a.max_pages * L.page_size < (std::int64_t(1) << 30), kPaged, "max_pages",
                  "must be >= 0 with max_pages * page_size < 2^30, got " + std::to_string(a.max_pages));
  detail::require(a.max_seq_k >= 0 && a.max_seq_k <= a.max_pages * L.page_size, kPaged, "max_seq_k",
                  "must be in [0, max_pages * page_size = " + std::to_string(a.max_pages * L.page_size) + "], got " +
                      std::to_string(a.max_seq_k));
  if (a.batch == 0 || a.total_q == 0 || a.max_seq_q == 0) return true;
  require_pointers(kPaged, a.q, a.pool, a.pool, a.out, a.lse, a.total_q * a.heads_q * L.head_dim, L.total_elems());
  detail::require_device_pointer(a.page_table, a.batch * a.max_pages, kPaged, "page_table");
  detail::require_device_pointer(a.seq_lens, a.batch, kPaged, "seq_lens");
  detail::require_device_pointer(a.cu_seqlens_q, a.batch + 1, kPaged, "cu_seqlens_q");
  for (const auto& [ptr, name] : {std::pair{a.page_table, "page_table"}, std::pair{a.seq_lens, "seq_lens"},
                                  std::pair{a.cu_seqlens_q, "cu_seqlens_q"}}) {
    detail::require_element_aligned(ptr, sizeof(std::int32_t), kPaged, name);
  }
  // Hopper only; page coordinates 2 x id + 1 must fit the kernel's 32-bit TMA coordinates.
  if (detail::current_compute_major() != 9 || L.num_pages >= (std::int64_t(1) << 30)) return false;
  attention::PagedParams p;
  AttentionShape& sh = p.shape;
  sh.batch = a.batch, sh.heads_q = a.heads_q, sh.heads_kv = L.num_kv_heads, sh.seq_q = a.max_seq_q;
  sh.seq_k = a.max_seq_k, sh.head_dim = L.head_dim;
  // {unused batch, head, token} strides of the packed q/out; k/v are read through the pool map.
  for (std::int64_t* st : {sh.q_stride, sh.o_stride, sh.k_stride, sh.v_stride}) {
    st[0] = 0, st[1] = L.head_dim, st[2] = a.heads_q * L.head_dim;
  }
  const auto* layer_base = static_cast<const unsigned char*>(a.pool) + a.layer * L.layer_elems() * dtype_size(dtype);
  p.q = a.q, p.k = layer_base, p.v = layer_base, p.out = a.out, p.lse = a.lse;
  p.causal = true;
  p.scale = a.scale;
  set_window(p, /*causal=*/true, a.options);
  p.cu_seqlens_q = a.cu_seqlens_q;
  p.total_q = static_cast<int>(a.total_q);
  p.page_table = a.page_table;
  p.seq_lens_k = a.seq_lens;
  p.table_stride = static_cast<int>(a.max_pages);
  p.page_size = static_cast<int>(L.page_size);
  p.num_pages = static_cast<int>(L.num_pages);
  p.num_kv_heads = static_cast<int>(L.num_kv_heads);
  return (L.head_dim == 64 ? attention::sm90::launch_paged_d64 : attention::sm90::launch_paged_d128)(p, dtype, stream);
}

}  // namespace flashkernel
