// Data movement of the paged KV cache: append (scatter new tokens into their slots), copy_pages
// (copy-on-write), gather (pages -> contiguous). All memory-bound: one thread per 16-byte unit of
// a head_dim row, grid-stride loops, rows addressed through the slot / page lists. Slots and page
// ids come from device memory: each is range-checked before use (common/index_guard.cuh).
#include <initializer_list>
#include <string>
#include <utility>

#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/index_guard.cuh"
#include "common/launch.h"
#include "common/vector_io.cuh"
#include "flashkernel/kv_cache.h"

namespace flashkernel {
namespace {

constexpr int kThreads = 256;
using Elem = std::uint16_t;  // fp16 and bf16 are moved as raw 2-byte values: no conversion here

// Byte-level geometry shared by the kernels (elements unless noted).
struct Geometry {
  std::int64_t num_pages, heads, page_size, head_dim, page_elems, layer_elems, layer_offset;
};

Geometry geometry(const KVCacheLayout& l, std::int64_t layer) {
  return {l.num_pages, l.num_kv_heads, l.page_size, l.head_dim, l.page_elems(), l.layer_elems(), layer * l.layer_elems()};
}

// A unit of NaN: 0x7fff is a NaN in both fp16 and bf16, so no dtype dispatch is needed.
template <typename Unit>
__device__ __forceinline__ Unit nan_unit() {
  if constexpr (sizeof(Unit) == sizeof(Elem)) {
    return Unit(0x7fff);
  } else {
    return make_int4(0x7fff7fff, 0x7fff7fff, 0x7fff7fff, 0x7fff7fff);
  }
}

// Unit: int4 (16-byte path) or Elem (any alignment). Work item = one unit of one (token, K|V, head) row.
template <typename Unit>
__global__ void append_kernel(Elem* __restrict__ pool, Geometry g, const std::int64_t* __restrict__ slots,
                              std::int64_t num_tokens, const Elem* __restrict__ k, const Elem* __restrict__ v,
                              std::int32_t* error_flag) {
  constexpr int kPer = sizeof(Unit) / sizeof(Elem);
  const std::int64_t units_per_row = g.head_dim / kPer;
  const std::int64_t total = num_tokens * 2 * g.heads * units_per_row;
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const std::int64_t c = i % units_per_row;
    std::int64_t r = i / units_per_row;
    const std::int64_t h = r % g.heads;
    r /= g.heads;
    const int kv = int(r % 2);
    const std::int64_t t = r / 2;
    const std::int64_t slot = slots[t];
    if (!detail::index_in_range(slot, g.num_pages * g.page_size, error_flag, kKVFaultSlots)) continue;
    const std::int64_t page = slot / g.page_size, off = slot % g.page_size;
    const Elem* src = (kv ? v : k) + (t * g.heads + h) * g.head_dim + c * kPer;
    Elem* dst = pool + g.layer_offset + page * g.page_elems + ((kv * g.heads + h) * g.page_size + off) * g.head_dim +
                c * kPer;
    *reinterpret_cast<Unit*>(dst) = *reinterpret_cast<const Unit*>(src);
  }
}

__global__ void copy_pages_kernel(int4* __restrict__ pool, std::int64_t num_layers, std::int64_t page_units,
                                  std::int64_t layer_units, const std::int32_t* __restrict__ src,
                                  const std::int32_t* __restrict__ dst, std::int64_t num_copies, std::int64_t num_pages,
                                  std::int32_t* error_flag) {
  const std::int64_t total = num_copies * num_layers * page_units;
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t i = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const std::int64_t u = i % page_units;
    const std::int64_t r = i / page_units;
    const std::int64_t layer = r % num_layers, n = r / num_layers;
    const std::int64_t base = layer * layer_units + u;
    const std::int32_t s = src[n], d = dst[n];
    // Both checked (no short circuit), so the flag names every bad argument.
    const bool ok = detail::index_in_range(s, num_pages, error_flag, kKVFaultCopySrc) &
                    detail::index_in_range(d, num_pages, error_flag, kKVFaultCopyDst);
    if (ok) pool[base + std::int64_t(d) * page_units] = pool[base + std::int64_t(s) * page_units];
  }
}

// grid.y = (K|V, head); grid.x tiles that head's [length, head_dim] slab. 32-bit index math: the
// slab of one head of one sequence is far below 2^31 units.
template <typename Unit>
__global__ void gather_kernel(const Elem* __restrict__ pool, Geometry g, const std::int32_t* __restrict__ pages,
                              int length, Elem* __restrict__ k_out, Elem* __restrict__ v_out,
                              std::int32_t* error_flag) {
  constexpr int kPer = sizeof(Unit) / sizeof(Elem);
  const int units_per_row = int(g.head_dim) / kPer;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= length * units_per_row) return;
  const int kv = blockIdx.y / int(g.heads), h = blockIdx.y % int(g.heads);
  const int t = i / units_per_row, c = i % units_per_row;
  const int ps = int(g.page_size);
  const std::int64_t page = pages[t / ps];
  Elem* dst = (kv ? v_out : k_out) + (std::int64_t(h) * length + t) * g.head_dim + c * kPer;
  if (!detail::index_in_range(page, g.num_pages, error_flag, kKVFaultPages)) {
    *reinterpret_cast<Unit*>(dst) = nan_unit<Unit>();  // every output element is written, visibly wrong here
    return;
  }
  const Elem* src = pool + g.layer_offset + page * g.page_elems +
                    (std::int64_t(kv * g.heads + h) * ps + (t % ps)) * g.head_dim + c * kPer;
  *reinterpret_cast<Unit*>(dst) = *reinterpret_cast<const Unit*>(src);
}

void require_layer(const KVCacheLayout& layout, std::int64_t layer, const char* op) {
  detail::require(layer >= 0 && layer < layout.num_layers, op, "layer",
                  "must be in [0, " + std::to_string(layout.num_layers) + "), got " + std::to_string(layer));
}

void require_pool(const void* pool, const char* op) {
  detail::require(pool != nullptr, op, "pool", "must be a non-null device pointer");
  detail::require(is_aligned(pool), op, "pool", "must be 16-byte aligned");
}

// The checks append and gather share: the layout, the pool, the layer, a token count >= 0, and
// the three device arrays of that many tokens.
void require_layer_tokens(const KVCacheLayout& layout, const void* pool, std::int64_t layer, const char* op,
                          const char* count_name, std::int64_t count,
                          std::initializer_list<std::pair<const void*, const char*>> arrays) {
  validate_kv_layout(layout, op);
  require_pool(pool, op);
  require_layer(layout, layer, op);
  detail::require(count >= 0, op, count_name, "must be >= 0, got " + std::to_string(count));
  for (const auto& [ptr, name] : arrays) detail::require_device_pointer(ptr, count, op, name);
}

}  // namespace

void kv_cache_append(void* pool, const KVCacheLayout& layout, std::int64_t layer, const std::int64_t* slots,
                     std::int64_t num_tokens, const void* k, const void* v, cudaStream_t stream,
                     std::int32_t* error_flag) {
  constexpr const char* kOp = "kv_cache_append";
  require_layer_tokens(layout, pool, layer, kOp, "num_tokens", num_tokens, {{slots, "slots"}, {k, "k"}, {v, "v"}});
  if (num_tokens == 0) return;
  const Geometry g = geometry(layout, layer);
  const std::int64_t rows = num_tokens * 2 * layout.num_kv_heads;
  const int sms = detail::current_sm_count();
  auto* p = static_cast<Elem*>(pool);
  auto* pk = static_cast<const Elem*>(k);
  auto* pv = static_cast<const Elem*>(v);
  if (is_aligned(k) && is_aligned(v)) {
    append_kernel<int4><<<detail::grid_for(rows * layout.head_dim / 8, kThreads, sms), kThreads, 0, stream>>>(
        p, g, slots, num_tokens, pk, pv, error_flag);
  } else {
    append_kernel<Elem><<<detail::grid_for(rows * layout.head_dim, kThreads, sms), kThreads, 0, stream>>>(
        p, g, slots, num_tokens, pk, pv, error_flag);
  }
  FK_CHECK_LAUNCH();
}

void kv_cache_copy_pages(void* pool, const KVCacheLayout& layout, const std::int32_t* src, const std::int32_t* dst,
                         std::int64_t num_copies, cudaStream_t stream, std::int32_t* error_flag) {
  constexpr const char* kOp = "kv_cache_copy_pages";
  validate_kv_layout(layout, kOp);
  require_pool(pool, kOp);
  detail::require(num_copies >= 0, kOp, "num_copies", "must be >= 0, got " + std::to_string(num_copies));
  detail::require_device_pointer(src, num_copies, kOp, "src");
  detail::require_device_pointer(dst, num_copies, kOp, "dst");
  if (num_copies == 0) return;
  // page_elems * 2 bytes is a multiple of 16 (head_dim is 64 or 128), so pages are int4 arrays.
  const std::int64_t page_units = layout.page_elems() * 2 / 16;
  const std::int64_t total = num_copies * layout.num_layers * page_units;
  copy_pages_kernel<<<detail::grid_for(total, kThreads, detail::current_sm_count()), kThreads, 0, stream>>>(
      static_cast<int4*>(pool), layout.num_layers, page_units, layout.num_pages * page_units, src, dst, num_copies,
      layout.num_pages, error_flag);
  FK_CHECK_LAUNCH();
}

void kv_cache_gather(const void* pool, const KVCacheLayout& layout, std::int64_t layer, const std::int32_t* pages,
                     std::int64_t length, void* k_out, void* v_out, cudaStream_t stream, std::int32_t* error_flag) {
  constexpr const char* kOp = "kv_cache_gather";
  require_layer_tokens(layout, pool, layer, kOp, "length", length,
                       {{pages, "pages"}, {k_out, "k_out"}, {v_out, "v_out"}});
  if (length == 0) return;
  detail::require(length * layout.head_dim < (std::int64_t(1) << 31), kOp, "length",
                  "is too long: length * head_dim must be < 2^31, got " + std::to_string(length));
  const Geometry g = geometry(layout, layer);
  auto* p = static_cast<const Elem*>(pool);
  auto* ko = static_cast<Elem*>(k_out);
  auto* vo = static_cast<Elem*>(v_out);
  const dim3 grid_y(1, static_cast<unsigned>(2 * layout.num_kv_heads));
  if (is_aligned(k_out) && is_aligned(v_out)) {
    dim3 grid(static_cast<unsigned>(detail::ceil_div(length * layout.head_dim / 8, kThreads)), grid_y.y);
    gather_kernel<int4><<<grid, kThreads, 0, stream>>>(p, g, pages, int(length), ko, vo, error_flag);
  } else {
    dim3 grid(static_cast<unsigned>(detail::ceil_div(length * layout.head_dim, kThreads)), grid_y.y);
    gather_kernel<Elem><<<grid, kThreads, 0, stream>>>(p, g, pages, int(length), ko, vo, error_flag);
  }
  FK_CHECK_LAUNCH();
}

}  // namespace flashkernel
