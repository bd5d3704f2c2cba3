// Data movement of the paged KV cache: append (scatter new tokens into their slots), copy_pages
// (copy-on-write), gather (pages -> contiguous). A float8 pool is quantized on append and
// dequantized on gather (common/fp8.cuh). All memory-bound: one thread per 8 elements of
// a head_dim row, grid-stride loops, rows addressed through the slot / page lists. Slots and page
// ids come from device memory: each is range-checked before use (common/index_guard.cuh).
#include <initializer_list>
#include <type_traits>
#include <string>
#include <utility>

#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/dependent_launch.cuh"
#include "common/dtype_traits.cuh"
#include "common/fp8.cuh"
#include "common/index_guard.cuh"
#include "common/launch.h"
#include "common/vector_io.cuh"
#include "flashkernel/kv_cache.h"

namespace flashkernel {
namespace {

constexpr int kThreads = 256;
using Elem = std::uint16_t;  // fp16 and bf16 are moved as raw 2-byte values: no conversion here
using Fp8 = std::uint8_t;    // e4m3 bytes of a float8 pool

// Byte-level geometry shared by the kernels (elements unless noted).
struct Geometry {
  std::int64_t num_pages, heads, page_size, head_dim, page_elems, layer_elems, layer_offset;
};

Geometry geometry(const KVCacheLayout& l, std::int64_t layer) {
  return {l.num_pages, l.num_kv_heads, l.page_size, l.head_dim, l.page_elems(), l.layer_elems(), layer * l.layer_elems()};
}

// The per-(layer, KV head) scales of one layer (null pointers for a 16-bit pool: scale 1).
struct LayerScales {
  const float* k;
  const float* v;
  __device__ __forceinline__ float of(int kv, std::int64_t h) const {
    return fp8::head_scale(kv ? v : k, h);
  }
};

// kPer elements of one row from src to dst. Src == Dst: the pool holds the caller's dtype and the
// 2-byte values move unconverted (one int4 for 8, or one element). Dst == Fp8: append into a
// float8 pool, e4m3(x / scale) (exact division, so the host reference can reproduce every byte).
// Src == Fp8: gather out of a float8 pool, scale * e4m3 value rounded once to Dst.
template <int kPer, typename Src, typename Dst>
__device__ __forceinline__ void move_elems(const Src* src, Dst* dst, float scale) {
  static_assert(kPer == 8 || kPer == 1, "a unit is 8 elements or one");
  if constexpr (std::is_same_v<Src, Dst>) {
    using Unit = std::conditional_t<kPer == 8, int4, Src>;
    *reinterpret_cast<Unit*>(dst) = *reinterpret_cast<const Unit*>(src);
  } else if constexpr (std::is_same_v<Dst, Fp8>) {
    if constexpr (kPer == 8) {
      float x[8];
      to_float_array(load_vec(src).v, x);
      std::uint32_t w[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        w[i] = std::uint32_t(fp8::quantize2(__fdiv_rn(x[4 * i], scale), __fdiv_rn(x[4 * i + 1], scale))) |
               (std::uint32_t(fp8::quantize2(__fdiv_rn(x[4 * i + 2], scale), __fdiv_rn(x[4 * i + 3], scale))) << 16);
      }
      *reinterpret_cast<uint2*>(dst) = make_uint2(w[0], w[1]);
    } else {
      *dst = fp8::quantize(__fdiv_rn(to_float(*src), scale));
    }
  } else {
    if constexpr (kPer == 8) {
      const Vec<Dst> raw = fp8::widen8<Dst>(*reinterpret_cast<const uint2*>(src));
      float x[8];
      to_float_array(raw.v, x);
#pragma unroll
      for (int i = 0; i < 8; ++i) x[i] *= scale;
      Vec<Dst> out;
      from_float_array(x, out.v);
      store_vec(dst, out);
    } else {
      *dst = from_float<Dst>(fp8::to_float(*src) * scale);
    }
  }
}

// kPer 2-byte NaNs: 0x7fff is a NaN in both fp16 and bf16, so no dtype dispatch is needed.
template <int kPer, typename Dst>
__device__ __forceinline__ void store_nan(Dst* dst) {
  static_assert(sizeof(Dst) == 2, "outputs are 16-bit");
  if constexpr (kPer == 8) {
    *reinterpret_cast<int4*>(dst) = make_int4(0x7fff7fff, 0x7fff7fff, 0x7fff7fff, 0x7fff7fff);
  } else {
    *reinterpret_cast<Elem*>(dst) = Elem(0x7fff);
  }
}

// Work item = kPer elements of one (token, K|V, head) row. In: the caller's element type (Elem
// for a 16-bit pool, __half / __nv_bfloat16 for a float8 pool); P: the pool's (Elem or Fp8).
template <int kPer, typename In, typename P>
__global__ void append_kernel(P* __restrict__ pool, Geometry g, const std::int64_t* __restrict__ slots,
                              std::int64_t num_tokens, const In* __restrict__ k, const In* __restrict__ v,
                              LayerScales scales, std::int32_t* error_flag) {
  pdl::wait_for_prior_grid();  // launched as a dependent (pdl::launch): k, v and slots are ready after this
  pdl::allow_dependents();
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
    const In* src = (kv ? v : k) + (t * g.heads + h) * g.head_dim + c * kPer;
    P* dst = pool + g.layer_offset + page * g.page_elems + ((kv * g.heads + h) * g.page_size + off) * g.head_dim +
             c * kPer;
    move_elems<kPer>(src, dst, scales.of(kv, h));
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

// grid.y = (K|V, head); grid.x tiles that head's [length, head_dim] slab, kPer elements per
// thread. P: the pool's element type (Elem or Fp8); Out: the output's (Elem, or the activation
// type of a float8 pool). 32-bit index math: the slab of one head of one sequence is far below
// 2^31 elements.
template <int kPer, typename P, typename Out>
__global__ void gather_kernel(const P* __restrict__ pool, Geometry g, const std::int32_t* __restrict__ pages,
                              int length, Out* __restrict__ k_out, Out* __restrict__ v_out, LayerScales scales,
                              std::int32_t* error_flag) {
  const int units_per_row = int(g.head_dim) / kPer;
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= length * units_per_row) return;
  const int kv = blockIdx.y / int(g.heads), h = blockIdx.y % int(g.heads);
  const int t = i / units_per_row, c = i % units_per_row;
  const int ps = int(g.page_size);
  const std::int64_t page = pages[t / ps];
  Out* dst = (kv ? v_out : k_out) + (std::int64_t(h) * length + t) * g.head_dim + c * kPer;
  if (!detail::index_in_range(page, g.num_pages, error_flag, kKVFaultPages)) {
    store_nan<kPer>(dst);  // every output element is written, visibly wrong here
    return;
  }
  const P* src = pool + g.layer_offset + page * g.page_elems +
                 (std::int64_t(kv * g.heads + h) * ps + (t % ps)) * g.head_dim + c * kPer;
  move_elems<kPer>(src, dst, scales.of(kv, h));
}

// Calls fn(TypeTag<In>{}, TypeTag<P>{}) with the element types the kernels move: (Elem, Elem) for
// a 16-bit pool, (activation type, Fp8) for a float8 pool.
template <typename Fn>
void dispatch_pool_types(const KVCacheLayout& l, const char* op, Fn&& fn) {
  if (!l.quantized()) return fn(TypeTag<Elem>{}, TypeTag<Elem>{});
  dispatch_half_dtype(l.activation_dtype, op, [&](auto tag) { fn(tag, TypeTag<Fp8>{}); });
}

// The layer's scales (see KVScales), after validate_kv_scales.
LayerScales layer_scales(const KVCacheLayout& l, std::int64_t layer, const KVScales& s, const char* op) {
  validate_kv_scales(l, s, op);
  if (!l.quantized()) return {nullptr, nullptr};
  const std::int64_t off = layer * l.num_kv_heads;
  return {s.k + off, s.v + off};
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
                     std::int32_t* error_flag, KVScales scales) {
  constexpr const char* kOp = "kv_cache_append";
  require_layer_tokens(layout, pool, layer, kOp, "num_tokens", num_tokens, {{slots, "slots"}, {k, "k"}, {v, "v"}});
  const LayerScales ls = layer_scales(layout, layer, scales, kOp);
  if (num_tokens == 0) return;
  const Geometry g = geometry(layout, layer);
  const std::int64_t rows = num_tokens * 2 * layout.num_kv_heads;
  const int sms = detail::current_sm_count();
  dispatch_pool_types(layout, kOp, [&](auto in_tag, auto pool_tag) {
    using In = typename decltype(in_tag)::type;
    using P = typename decltype(pool_tag)::type;
    auto* p = static_cast<P*>(pool);
    auto* pk = static_cast<const In*>(k);
    auto* pv = static_cast<const In*>(v);
    if (is_aligned(k) && is_aligned(v)) {
      pdl::launch(append_kernel<8, In, P>, detail::grid_for(rows * layout.head_dim / 8, kThreads, sms), dim3(kThreads),
                  0, stream, p, g, slots, num_tokens, pk, pv, ls, error_flag);
    } else {
      pdl::launch(append_kernel<1, In, P>, detail::grid_for(rows * layout.head_dim, kThreads, sms), dim3(kThreads), 0,
                  stream, p, g, slots, num_tokens, pk, pv, ls, error_flag);
    }
    FK_CHECK_LAUNCH();
  });
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
  // Bytes, whatever the dtype: a page (>= 2 * 8 * 64 elements of >= 1 byte) is a multiple of 16
  // bytes, so pages are int4 arrays.
  const std::int64_t page_units = layout.page_elems() * std::int64_t(dtype_size(layout.dtype)) / 16;
  const std::int64_t total = num_copies * layout.num_layers * page_units;
  copy_pages_kernel<<<detail::grid_for(total, kThreads, detail::current_sm_count()), kThreads, 0, stream>>>(
      static_cast<int4*>(pool), layout.num_layers, page_units, layout.num_pages * page_units, src, dst, num_copies,
      layout.num_pages, error_flag);
  FK_CHECK_LAUNCH();
}

void kv_cache_gather(const void* pool, const KVCacheLayout& layout, std::int64_t layer, const std::int32_t* pages,
                     std::int64_t length, void* k_out, void* v_out, cudaStream_t stream, std::int32_t* error_flag,
                     KVScales scales) {
  constexpr const char* kOp = "kv_cache_gather";
  require_layer_tokens(layout, pool, layer, kOp, "length", length,
                       {{pages, "pages"}, {k_out, "k_out"}, {v_out, "v_out"}});
  const LayerScales ls = layer_scales(layout, layer, scales, kOp);
  if (length == 0) return;
  detail::require(length * layout.head_dim < (std::int64_t(1) << 31), kOp, "length",
                  "is too long: length * head_dim must be < 2^31, got " + std::to_string(length));
  const Geometry g = geometry(layout, layer);
  const unsigned heads2 = static_cast<unsigned>(2 * layout.num_kv_heads);
  dispatch_pool_types(layout, kOp, [&](auto out_tag, auto pool_tag) {
    using Out = typename decltype(out_tag)::type;
    using P = typename decltype(pool_tag)::type;
    auto* p = static_cast<const P*>(pool);
    auto* ko = static_cast<Out*>(k_out);
    auto* vo = static_cast<Out*>(v_out);
    if (is_aligned(k_out) && is_aligned(v_out)) {
      const dim3 grid(static_cast<unsigned>(detail::ceil_div(length * layout.head_dim / 8, kThreads)), heads2);
      gather_kernel<8><<<grid, kThreads, 0, stream>>>(p, g, pages, int(length), ko, vo, ls, error_flag);
    } else {
      const dim3 grid(static_cast<unsigned>(detail::ceil_div(length * layout.head_dim, kThreads)), heads2);
      gather_kernel<1><<<grid, kThreads, 0, stream>>>(p, g, pages, int(length), ko, vo, ls, error_flag);
    }
    FK_CHECK_LAUNCH();
  });
}

}  // namespace flashkernel
