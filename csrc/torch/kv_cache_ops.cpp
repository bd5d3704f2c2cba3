// PyTorch bindings of the paged KV cache.
//
// The host-side page allocator is a TorchScript custom class (torch.classes.flashkernel.
// KVPageAllocator): its state (free list, reference counts, page lists) lives in C++ and Python holds
// a reference-counted handle whose lifetime Python manages, with no opaque integer handles to leak
// or dangle. The kernels are ordinary tensor ops taking the pool and index tensors, so they
// dispatch, trace and run under torch.compile like any other op: the allocator never crosses into
// a graph, only the tensors it produces do.
//
// Index checks: the kernels never touch memory outside their tensors whatever the slots, page ids
// and lengths say (kv_cache.h, "Index faults"). With check_indices=true (the default) an op also
// reads the kernels' fault flag back and raises ValueError naming the argument; that costs a
// stream synchronization, so callers whose indices are valid by construction (PagedKVCache, which
// gets them from the allocator) pass false. During CUDA-graph capture no read-back is possible:
// out-of-range entries are then skipped without an error.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "flashkernel/attention.h"
#include "flashkernel/kv_cache.h"
#include "torch/registration.h"
#include "torch/torch_utils.h"

namespace flashkernel::torch_ops {
namespace {

// The fault flag of one op call (see the top of the file).
class IndexFaultCheck {
 public:
  IndexFaultCheck(const at::Tensor& like, bool enabled) {
    if (enabled && !stream_is_capturing(stream_of(like))) flag_ = at::zeros({1}, like.options().dtype(at::kInt));
  }
  std::int32_t* flag() { return flag_.defined() ? flag_.data_ptr<std::int32_t>() : nullptr; }
  // Waits for the op's kernels (item() synchronizes) and raises if any index was out of range.
  void raise_if_faulted(const KVCacheLayout& layout, const char* op) const {
    if (!flag_.defined()) return;
    const std::int32_t faults = flag_.item<std::int32_t>();
    if (faults != 0) call_library([&] { throw_kv_index_faults(faults, layout, op); });
  }

 private:
  at::Tensor flag_;
};

DType half_dtype(at::ScalarType t) { return t == at::kHalf ? DType::kFloat16 : DType::kBFloat16; }

// Rejects, naming the argument, a cache layout the kernels cannot run: PagedKVCache calls it
// before it allocates or records anything. dtype: the activations' (K/V in, gather out, q/out);
// kv_dtype: the pool's (None: dtype; or torch.float8_e4m3fn).
void check_layout(int64_t num_layers, int64_t num_pages, int64_t page_size, int64_t num_kv_heads, int64_t head_dim,
                  at::ScalarType dtype, std::optional<at::ScalarType> kv_dtype) {
  constexpr const char* kOp = "flashkernel.PagedKVCache";
  KVCacheLayout l;
  l.num_layers = num_layers;
  l.num_pages = num_pages;
  l.page_size = page_size;
  l.num_kv_heads = num_kv_heads;
  l.head_dim = head_dim;
  TORCH_CHECK_TYPE(dtype == at::kHalf || dtype == at::kBFloat16, kOp,
                   ": argument 'dtype' must be torch.float16 or torch.bfloat16, got ", dtype);
  const at::ScalarType kv = kv_dtype.value_or(dtype);
  TORCH_CHECK_TYPE(kv == dtype || kv == at::kFloat8_e4m3fn, kOp,
                   ": argument 'kv_dtype' must be None, the cache's dtype (", dtype,
                   ") or torch.float8_e4m3fn, got ", kv);
  l.activation_dtype = half_dtype(dtype);
  l.dtype = kv == at::kFloat8_e4m3fn ? DType::kFloat8E4M3 : l.activation_dtype;
  call_library([&] { validate_kv_layout(l, kOp, ""); });
}

struct KVPageAllocatorHolder : torch::CustomClassHolder {
  KVPageAllocatorHolder(int64_t num_pages, int64_t page_size, int64_t num_layers)
      : alloc(call_library([&] { return KVPageAllocator(num_pages, page_size, num_layers); })) {}
  KVPageAllocator alloc;
};
using Handle = c10::intrusive_ptr<KVPageAllocatorHolder>;

template <typename T>
at::Tensor cpu_tensor(const std::vector<T>& v, std::vector<int64_t> shape, at::ScalarType type) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
  if (!v.empty()) std::memcpy(t.data_ptr(), v.data(), v.size() * sizeof(T));
  return t;
}

// Layout of a pool tensor [num_layers, num_pages, 2, num_kv_heads, page_size, head_dim] whose
// activations (K/V in, outputs, q) have dtype `io` (a float8 pool's activation_dtype; a 16-bit
// pool's activations must have its dtype, which the callers check).
KVCacheLayout layout_of(const at::Tensor& pool, at::ScalarType io, const char* op) {
  check_cuda(pool, op, "pool");
  check_dim(pool, 6, op, "pool", "[num_layers, num_pages, 2, num_kv_heads, page_size, head_dim]");
  TORCH_CHECK_VALUE(pool.size(2) == 2, op, ": argument 'pool' must have size 2 (K, V) in dim 2, got shape ",
                    pool.sizes());
  check_contiguous(pool, op, "pool");
  KVCacheLayout l;
  l.num_layers = pool.size(0);
  l.num_pages = pool.size(1);
  l.num_kv_heads = pool.size(3);
  l.page_size = pool.size(4);
  l.head_dim = pool.size(5);
  if (pool.scalar_type() == at::kFloat8_e4m3fn) {
    l.dtype = DType::kFloat8E4M3;
    TORCH_CHECK_TYPE(io == at::kHalf || io == at::kBFloat16, op,
                     ": a float8_e4m3fn pool takes and returns float16 or bfloat16 activations, got ", io);
    l.activation_dtype = half_dtype(io);
  } else {
    TORCH_CHECK_TYPE(pool.scalar_type() == at::kHalf || pool.scalar_type() == at::kBFloat16, op,
                     ": argument 'pool' has unsupported dtype ", pool.scalar_type(),
                     "; expected float16, bfloat16 or float8_e4m3fn");
    l.dtype = half_dtype(pool.scalar_type());
  }
  return l;
}

// The scale tensors of a float8 pool (float32 [num_layers, num_kv_heads] on the pool's device),
// or none for a 16-bit pool; either way a mismatch is an error naming the argument.
KVScales scales_of(const at::Tensor& pool, const KVCacheLayout& l, const std::optional<at::Tensor>& k_scale,
                   const std::optional<at::Tensor>& v_scale, const char* op) {
  KVScales s;
  for (auto [t, name, out] : {std::tuple{&k_scale, "k_scale", &s.k}, std::tuple{&v_scale, "v_scale", &s.v}}) {
    if (!l.quantized()) {
      TORCH_CHECK_VALUE(!t->has_value(), op, ": argument '", name, "' must be None for a ", pool.scalar_type(),
                        " pool (scales are for float8_e4m3fn pools)");
      continue;
    }
    TORCH_CHECK_VALUE(t->has_value(), op, ": argument '", name,
                      "' is required for a float8_e4m3fn pool (float32 [num_layers, num_kv_heads])");
    const at::Tensor& x = **t;
    check_cuda_on_device_of(x, pool, op, name, "pool");
    TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, op, ": argument '", name, "' must be float32, got ",
                     x.scalar_type());
    TORCH_CHECK_VALUE(x.dim() == 2 && x.size(0) == l.num_layers && x.size(1) == l.num_kv_heads, op, ": argument '",
                      name, "' must have shape [", l.num_layers, ", ", l.num_kv_heads,
                      "] (num_layers, num_kv_heads), got ", x.sizes());
    check_contiguous(x, op, name);
    *out = x.data_ptr<float>();
  }
  return s;
}

// The activations of a 16-bit pool are in its dtype; those of a float8 pool in float16 / bfloat16.
void check_activation_dtype(const at::Tensor& t, const at::Tensor& pool, const char* op, const char* name) {
  if (pool.scalar_type() != at::kFloat8_e4m3fn) return check_same_dtype(t, pool, op, name, "pool");
  TORCH_CHECK_TYPE(t.scalar_type() == at::kHalf || t.scalar_type() == at::kBFloat16, op, ": argument '", name,
                   "' must be float16 or bfloat16 for a float8_e4m3fn pool, got ", t.scalar_type());
}

void check_index(const at::Tensor& t, const at::Tensor& pool, at::ScalarType type, const char* op, const char* name) {
  check_cuda_on_device_of(t, pool, op, name, "pool");
  TORCH_CHECK_TYPE(t.scalar_type() == type, op, ": argument '", name, "' must be ", type, ", got ", t.scalar_type());
  check_contiguous(t, op, name);
}

void append_cuda(const at::Tensor& pool, int64_t layer, const at::Tensor& slots, const at::Tensor& k,
                 const at::Tensor& v, bool check_indices, const std::optional<at::Tensor>& k_scale,
                 const std::optional<at::Tensor>& v_scale) {
  constexpr const char* kOp = "flashkernel.kv_cache_append";
  check_cuda(k, kOp, "k");
  KVCacheLayout l = layout_of(pool, k.scalar_type(), kOp);
  check_index(slots, pool, at::kLong, kOp, "slots");
  check_dim(slots, 1, kOp, "slots", "[num_tokens]");
  for (auto [t, name] : {std::pair{&k, "k"}, std::pair{&v, "v"}}) {
    check_cuda_on_device_of(*t, pool, kOp, name, "pool");
    check_activation_dtype(*t, pool, kOp, name);
    check_same_dtype(*t, k, kOp, name, "k");
    check_dim(*t, 3, kOp, name, "[num_tokens, num_kv_heads, head_dim]");
    TORCH_CHECK_VALUE(t->size(0) == slots.size(0) && t->size(1) == l.num_kv_heads && t->size(2) == l.head_dim, kOp,
                      ": argument '", name, "' must have shape [", slots.size(0), ", ", l.num_kv_heads, ", ",
                      l.head_dim, "] (tokens, kv heads, head_dim of the pool), got ", t->sizes());
    check_contiguous(*t, kOp, name);
  }
  const KVScales scales = scales_of(pool, l, k_scale, v_scale, kOp);
  const c10::cuda::CUDAGuard guard(pool.device());
  IndexFaultCheck check(pool, check_indices && slots.numel() > 0);
  call_library([&] {
    kv_cache_append(pool.data_ptr(), l, layer, slots.data_ptr<int64_t>(), slots.size(0), k.data_ptr(), v.data_ptr(),
                    stream_of(pool), check.flag(), scales);
  });
  check.raise_if_faulted(l, kOp);
}

void copy_pages_cuda(const at::Tensor& pool, const at::Tensor& src, const at::Tensor& dst, bool check_indices) {
  constexpr const char* kOp = "flashkernel.kv_cache_copy_pages";
  // Bytes are copied as they are: the activation dtype plays no part (any 16-bit one will do).
  KVCacheLayout l = layout_of(pool, at::kHalf, kOp);
  check_index(src, pool, at::kInt, kOp, "src");
  check_index(dst, pool, at::kInt, kOp, "dst");
  TORCH_CHECK_VALUE(src.dim() == 1 && src.sizes() == dst.sizes(), kOp,
                    ": arguments 'src' and 'dst' must be 1-D of the same length, got ", src.sizes(), " and ",
                    dst.sizes());
  const c10::cuda::CUDAGuard guard(pool.device());
  IndexFaultCheck check(pool, check_indices && src.numel() > 0);
  call_library([&] {
    kv_cache_copy_pages(pool.data_ptr(), l, src.data_ptr<int32_t>(), dst.data_ptr<int32_t>(), src.size(0),
                        stream_of(pool), check.flag());
  });
  check.raise_if_faulted(l, kOp);
}

// out_dtype: the outputs' dtype; required for a float8 pool (float16 or bfloat16), else None or the
// pool's dtype.
std::tuple<at::Tensor, at::Tensor> gather_cuda(const at::Tensor& pool, int64_t layer, const at::Tensor& pages,
                                               int64_t length, bool check_indices,
                                               const std::optional<at::Tensor>& k_scale,
                                               const std::optional<at::Tensor>& v_scale,
                                               std::optional<at::ScalarType> out_dtype) {
  constexpr const char* kOp = "flashkernel.kv_cache_gather";
  check_cuda(pool, kOp, "pool");
  const bool fp8 = pool.scalar_type() == at::kFloat8_e4m3fn;
  TORCH_CHECK_VALUE(!fp8 || out_dtype.has_value(), kOp,
                    ": argument 'out_dtype' is required for a float8_e4m3fn pool (torch.float16 or torch.bfloat16)");
  const at::ScalarType out_type = out_dtype.value_or(pool.scalar_type());
  TORCH_CHECK_TYPE(fp8 || out_type == pool.scalar_type(), kOp, ": argument 'out_dtype' must be None or the pool's dtype ",
                   pool.scalar_type(), " for a 16-bit pool, got ", out_type);
  TORCH_CHECK_TYPE(!fp8 || out_type == at::kHalf || out_type == at::kBFloat16, kOp,
                   ": argument 'out_dtype' must be torch.float16 or torch.bfloat16, got ", out_type);
  KVCacheLayout l = layout_of(pool, out_type, kOp);
  check_index(pages, pool, at::kInt, kOp, "pages");
  check_dim(pages, 1, kOp, "pages", "[num_pages]");
  TORCH_CHECK_VALUE(length >= 0 && length <= pages.size(0) * l.page_size, kOp, ": argument 'length' must be in [0, ",
                    pages.size(0) * l.page_size, "] (pages.size(0) * page_size), got ", length);
  const KVScales scales = scales_of(pool, l, k_scale, v_scale, kOp);
  const c10::cuda::CUDAGuard guard(pool.device());
  at::Tensor k = at::empty({l.num_kv_heads, length, l.head_dim}, pool.options().dtype(out_type));
  at::Tensor v = at::empty({l.num_kv_heads, length, l.head_dim}, pool.options().dtype(out_type));
  IndexFaultCheck check(pool, check_indices && length > 0);
  call_library([&] {
    kv_cache_gather(pool.data_ptr(), l, layer, pages.data_ptr<int32_t>(), length, k.data_ptr(), v.data_ptr(),
                    stream_of(pool), check.flag(), scales);
  });
  check.raise_if_faulted(l, kOp);
  return {k, v};
}

// The checks both attention ops over the pool share: q [rows, num_q_heads, head_dim] (q_layout
// names the rows) contiguous in the pool's activation dtype on its device, the page table
// [batch, max_pages] and the lengths [batch] int32 there. Returns the pool's layout.
KVCacheLayout check_paged_attention_args(const char* op, const at::Tensor& q, const char* q_layout,
                                         const at::Tensor& pool, const at::Tensor& page_table,
                                         const at::Tensor& seq_lens) {
  check_cuda(q, op, "q");
  check_cuda(pool, op, "pool");
  check_activation_dtype(q, pool, op, "q");
  KVCacheLayout l = layout_of(pool, q.scalar_type(), op);
  check_same_device(q, pool, op, "q", "pool");
  check_dim(q, 3, op, "q", q_layout);
  check_contiguous(q, op, "q");
  TORCH_CHECK_VALUE(q.size(2) == l.head_dim, op, ": argument 'q' must have head_dim ", l.head_dim,
                    " (the pool's), got shape ", q.sizes());
  check_index(page_table, pool, at::kInt, op, "page_table");
  check_dim(page_table, 2, op, "page_table", "[batch, max_pages]");
  check_index(seq_lens, pool, at::kInt, op, "seq_lens");
  check_dim(seq_lens, 1, op, "seq_lens", "[batch]");
  return l;
}

// The fields PagedDecodeArgs and PagedPrefillArgs share, from the checked tensors.
template <typename Args>
void set_paged_attention_args(Args& a, const at::Tensor& q, at::Tensor& out, const at::Tensor& pool,
                              const KVCacheLayout& l, int64_t layer, const at::Tensor& page_table,
                              const at::Tensor& seq_lens) {
  a.q = q.data_ptr();
  a.out = out.data_ptr();
  a.pool = pool.data_ptr();
  a.layout = l;
  a.layer = layer;
  a.page_table = page_table.data_ptr<int32_t>();
  a.max_pages = page_table.size(1);
  a.seq_lens = seq_lens.data_ptr<int32_t>();
}

at::Tensor paged_decode_cuda(const at::Tensor& q, const at::Tensor& pool, int64_t layer, const at::Tensor& page_table,
                             const at::Tensor& seq_lens, int64_t max_seq_len, std::optional<double> scale,
                             bool check_indices, int64_t variant, const std::optional<at::Tensor>& k_scale,
                             const std::optional<at::Tensor>& v_scale) {
  constexpr const char* kOp = "flashkernel.paged_decode_attention";
  KVCacheLayout l = check_paged_attention_args(kOp, q, "[batch, num_q_heads, head_dim]", pool, page_table, seq_lens);
  TORCH_CHECK_VALUE(page_table.size(0) == q.size(0) && seq_lens.size(0) == q.size(0), kOp,
                    ": arguments 'page_table' and 'seq_lens' must have one row per sequence of 'q' (", q.size(0),
                    "), got ", page_table.sizes(), " and ", seq_lens.sizes());
  const double sc = scale.has_value() ? *scale : 1.0 / std::sqrt(double(l.head_dim));
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor out = at::empty_like(q);
  PagedDecodeArgs a;
  set_paged_attention_args(a, q, out, pool, l, layer, page_table, seq_lens);
  a.batch = q.size(0);
  a.num_q_heads = q.size(1);
  a.max_seq_len = max_seq_len;
  a.scale = static_cast<float>(sc);
  a.scales = scales_of(pool, l, k_scale, v_scale, kOp);
  // PagedDecodeVariant: -1 chooses, 0..5 name a loop variant (A/B measurements, tests). Out of
  // range values are the library's error, which names the argument.
  a.variant = static_cast<PagedDecodeVariant>(std::clamp<int64_t>(variant, -2, 6));
  const std::size_t ws = call_library([&] { return paged_decode_workspace_bytes(a); });
  at::Tensor workspace;
  if (ws) {
    workspace = at::empty({static_cast<int64_t>(ws / sizeof(float))}, q.options().dtype(at::kFloat));
    a.workspace = workspace.data_ptr();
    a.workspace_bytes = ws;
  }
  IndexFaultCheck check(q, check_indices && q.size(0) > 0);
  a.error_flag = check.flag();
  call_library([&] { paged_decode_attention(a, stream_of(q)); });
  check.raise_if_faulted(l, kOp);
  return out;
}

// Prefill over the paged cache on the Hopper kernel (flashkernel::paged_prefill_attention): q
// [total_q, heads_q, head_dim] packed by cu_seqlens_q, K/V read through page_table. Raises
// ValueError naming 'pool' where that kernel cannot run (the Python op then gathers K/V and calls
// flash_attention_varlen instead; it asks paged_prefill_supported first).
at::Tensor paged_prefill_cuda(const at::Tensor& q, const at::Tensor& pool, int64_t layer, const at::Tensor& page_table,
                              const at::Tensor& seq_lens, const at::Tensor& cu_seqlens_q, int64_t max_seqlen_q,
                              int64_t max_seqlen_k, std::optional<double> scale, int64_t window_left,
                              int64_t window_right, double softcap) {
  constexpr const char* kOp = "flashkernel.paged_prefill_attention";
  KVCacheLayout l = check_paged_attention_args(kOp, q, "[total_q, num_q_heads, head_dim]", pool, page_table, seq_lens);
  check_index(cu_seqlens_q, pool, at::kInt, kOp, "cu_seqlens_q");
  check_dim(cu_seqlens_q, 1, kOp, "cu_seqlens_q", "[batch + 1]");
  TORCH_CHECK_VALUE(page_table.size(0) == seq_lens.size(0) && cu_seqlens_q.size(0) == seq_lens.size(0) + 1, kOp,
                    ": arguments 'page_table', 'seq_lens' and 'cu_seqlens_q' must describe the same batch, got ",
                    page_table.sizes(), ", ", seq_lens.sizes(), " and ", cu_seqlens_q.sizes());
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor out = at::empty_like(q);
  if (q.numel() == 0) return out;
  out.zero_();  // rows past cu_seqlens_q's last offset belong to no sequence
  PagedPrefillArgs a;
  set_paged_attention_args(a, q, out, pool, l, layer, page_table, seq_lens);
  a.cu_seqlens_q = cu_seqlens_q.data_ptr<int32_t>();
  a.batch = seq_lens.size(0);
  a.heads_q = q.size(1);
  a.total_q = q.size(0);
  a.max_seq_q = max_seqlen_q;
  a.max_seq_k = max_seqlen_k;
  a.scale = static_cast<float>(scale.has_value() ? *scale : 1.0 / std::sqrt(double(l.head_dim)));
  a.options.window_left = window_left;
  a.options.window_right = window_right;
  a.options.softcap = static_cast<float>(softcap);
  const bool launched = call_library([&] { return paged_prefill_attention(a, stream_of(q)); });
  TORCH_CHECK_VALUE(launched, kOp, ": argument 'pool' cannot be read by the Hopper paged-prefill kernel here (it ",
                    "needs a compute capability 9.x GPU, an sm_90a build and a float16/bfloat16 pool)");
  return out;
}

void impl_kernels(torch::Library& m) {
  m.impl("kv_cache_append", &append_cuda);
  m.impl("kv_cache_copy_pages", &copy_pages_cuda);
  m.impl("kv_cache_gather", &gather_cuda);
  m.impl("paged_decode_attention", &paged_decode_cuda);
  m.impl("paged_prefill_attention", &paged_prefill_cuda);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(flashkernel, m) {
  m.class_<KVPageAllocatorHolder>("KVPageAllocator")
      .def(torch::init<int64_t, int64_t, int64_t>())
      .def("add_sequence", [](const Handle& self) { return self->alloc.add_sequence(); })
      .def("reserve", [](const Handle& self, int64_t seq_id,
                         int64_t n_tokens) { call_library([&] { self->alloc.reserve(seq_id, n_tokens); }); })
      .def("free_sequence",
           [](const Handle& self, int64_t seq_id) { call_library([&] { self->alloc.free_sequence(seq_id); }); })
      .def("fork", [](const Handle& self, int64_t seq_id) { return call_library([&] { return self->alloc.fork(seq_id); }); })
      // -> (slots int64 [tokens], copy_src int32 [copies], copy_dst int32 [copies], plan id), CPU
      // tensors; the id is what cancel_append takes.
      .def("plan_append",
           [](const Handle& self, int64_t layer, std::vector<int64_t> seq_ids, std::vector<int64_t> counts) {
             AppendPlan plan = call_library([&] { return self->alloc.plan_append(layer, seq_ids, counts); });
             std::vector<int32_t> src, dst;
             for (const PageCopy& c : plan.copies) {
               src.push_back(c.src);
               dst.push_back(c.dst);
             }
             const auto n = static_cast<int64_t>(src.size());
             return std::make_tuple(cpu_tensor(plan.slots, {static_cast<int64_t>(plan.slots.size())}, at::kLong),
                                    cpu_tensor(src, {n}, at::kInt), cpu_tensor(dst, {n}, at::kInt),
                                    static_cast<int64_t>(plan.id));
           })
      .def("cancel_append",
           [](const Handle& self, int64_t plan_id) {
             AppendPlan plan;
             plan.id = static_cast<std::uint64_t>(plan_id);
             call_library([&] { self->alloc.cancel_append(plan); });
           })
      // -> (table int32 [batch, max_pages], lens int32 [batch]) on the CPU; layer -1: longest layer.
      .def("page_table",
           [](const Handle& self, std::vector<int64_t> seq_ids, int64_t layer) {
             return call_library([&] {
               int64_t width = 0;
               std::vector<int32_t> table = self->alloc.page_table(seq_ids, &width);
               std::vector<int32_t> lens;
               for (int64_t id : seq_ids) lens.push_back(static_cast<int32_t>(self->alloc.length(id, layer)));
               const auto b = static_cast<int64_t>(seq_ids.size());
               return std::make_tuple(cpu_tensor(table, {b, width}, at::kInt), cpu_tensor(lens, {b}, at::kInt));
             });
           })
      .def("length", [](const Handle& self, int64_t seq_id,
                        int64_t layer) { return call_library([&] { return self->alloc.length(seq_id, layer); }); })
      .def("pages",
           [](const Handle& self, int64_t seq_id) {
             return call_library([&] {
               const std::vector<int32_t> p = self->alloc.pages(seq_id);
               return cpu_tensor(p, {static_cast<int64_t>(p.size())}, at::kInt);
             });
           })
      .def("sequence_ids", [](const Handle& self) { return self->alloc.sequence_ids(); })
      .def("has_sequence", [](const Handle& self, int64_t seq_id) { return self->alloc.has_sequence(seq_id); })
      .def("refcount", [](const Handle& self,
                          int64_t page) { return int64_t(call_library([&] { return self->alloc.refcount(page); })); })
      .def("free_pages",
           [](const Handle& self) {
             const std::vector<int32_t> f = self->alloc.free_pages();
             return std::vector<int64_t>(f.begin(), f.end());
           })
      .def("num_free_pages", [](const Handle& self) { return self->alloc.num_free_pages(); })
      // -> [pages_total, pages_used, pages_free, num_sequences, token_slots_allocated, tokens_stored,
      //     fragmentation_tokens]
      .def("memory_stats",
           [](const Handle& self) {
             KVMemoryStats s = self->alloc.memory_stats();
             return std::vector<int64_t>{s.pages_total,           s.pages_used,    s.pages_free,
                                         s.num_sequences,         s.token_slots_allocated, s.tokens_stored,
                                         s.fragmentation_tokens};
           })
      .def("check_invariants", [](const Handle& self) { call_library([&] { self->alloc.check_invariants(); }); })
      .def("num_pages", [](const Handle& self) { return self->alloc.num_pages(); })
      .def("page_size", [](const Handle& self) { return self->alloc.page_size(); })
      .def("num_layers", [](const Handle& self) { return self->alloc.num_layers(); });

  // k_scale / v_scale: a float8_e4m3fn pool's float32 [num_layers, num_kv_heads] scales (see kv_cache.h
  // KVScales); None for a 16-bit pool.
  m.def(
      "kv_cache_append(Tensor(a!) pool, int layer, Tensor slots, Tensor k, Tensor v, bool check_indices=True, "
      "Tensor? k_scale=None, Tensor? v_scale=None) -> ()");
  m.def("kv_cache_copy_pages(Tensor(a!) pool, Tensor src, Tensor dst, bool check_indices=True) -> ()");
  m.def(
      "kv_cache_gather(Tensor pool, int layer, Tensor pages, int length, bool check_indices=True, "
      "Tensor? k_scale=None, Tensor? v_scale=None, ScalarType? out_dtype=None) -> (Tensor, Tensor)");
  m.def(
      "paged_decode_attention(Tensor q, Tensor pool, int layer, Tensor page_table, Tensor seq_lens, int max_seq_len, "
      "float? scale=None, bool check_indices=True, int variant=-1, Tensor? k_scale=None, Tensor? v_scale=None) -> Tensor");
  m.def(
      "paged_prefill_attention(Tensor q, Tensor pool, int layer, Tensor page_table, Tensor seq_lens, "
      "Tensor cu_seqlens_q, int max_seqlen_q, int max_seqlen_k, float? scale=None, int window_left=-1, "
      "int window_right=-1, float softcap=0.0) -> Tensor");
  m.def(
      "kv_cache_check_layout(int num_layers, int num_pages, int page_size, int num_kv_heads, int head_dim, "
      "ScalarType dtype, ScalarType? kv_dtype=None) -> ()",
      &check_layout);
}

FK_TORCH_IMPL_CUDA_AND_CPU(impl_kernels)

}  // namespace flashkernel::torch_ops
