// GPT-2 engine device kernels (see kernels.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <climits>

#include "common/block_reduce.cuh"
#include "common/cuda_check.h"
#include "common/dependent_launch.cuh"
#include "common/dtype_traits.cuh"
#include "common/launch.h"
#include "common/vector_io.cuh"
#include "models/gpt2/kernels.cuh"

namespace flashkernel::models::gpt2_detail {
namespace {

constexpr const char* kOp = "gpt2";

__host__ __device__ __forceinline__ std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) with 24 random bits (exact in fp32).
__device__ __forceinline__ float uniform01(std::uint64_t h) { return float(h >> 40) * (1.0f / 16777216.0f); }

template <typename T>
__global__ void embed_kernel(const T* __restrict__ wte, const T* __restrict__ wpe, const std::int32_t* __restrict__ tokens,
                             const std::int32_t* __restrict__ positions, T* __restrict__ h, int n_embd,
                             const std::int32_t* __restrict__ page_table, int max_pages, int page_size,
                             std::int64_t* __restrict__ slots, std::int32_t* __restrict__ seq_lens) {
  static_assert(vec_size<T>() == 8, "16-bit elements: 8 per 16-byte vector");
  pdl::allow_dependents();  // the step's first LayerNorm may be scheduled (it waits for this grid)
  const std::int64_t r = blockIdx.x;
  const std::int64_t tok = tokens[r];
  const std::int64_t pos = positions[r];
  const auto* a = reinterpret_cast<const Vec<T>*>(wte + tok * n_embd);
  const auto* p = reinterpret_cast<const Vec<T>*>(wpe + pos * n_embd);
  auto* o = reinterpret_cast<Vec<T>*>(h + r * n_embd);
  for (int c = threadIdx.x; c < n_embd / 8; c += blockDim.x) {
    const Vec<T> x = a[c], y = p[c];
    Vec<T> z;
#pragma unroll
    for (int i = 0; i < 8; ++i) z.v[i] = from_float<T>(to_float(x.v[i]) + to_float(y.v[i]));
    o[c] = z;
  }
  if (page_table != nullptr && threadIdx.x == 0) {
    const std::int64_t page = page_table[r * max_pages + pos / page_size];
    slots[r] = page * page_size + pos % page_size;
    seq_lens[r] = static_cast<std::int32_t>(pos + 1);
  }
}

template <typename T>
__global__ void split_qkv_kernel(const T* __restrict__ qkv, const T* __restrict__ bias, T* __restrict__ q,
                                 T* __restrict__ k, T* __restrict__ v, int n_embd) {
  static_assert(vec_size<T>() == 8, "16-bit elements: 8 per 16-byte vector");
  const std::int64_t r = blockIdx.x;
  const int packs = n_embd / 8;
  const auto* in = reinterpret_cast<const Vec<T>*>(qkv + r * 3 * n_embd);
  const auto* bb = reinterpret_cast<const Vec<T>*>(bias);
  for (int c = threadIdx.x; c < 3 * packs; c += blockDim.x) {
    const Vec<T> x = in[c], b = bb[c];
    Vec<T> z;
#pragma unroll
    for (int i = 0; i < 8; ++i) z.v[i] = from_float<T>(to_float(x.v[i]) + to_float(b.v[i]));
    T* dst = c < packs ? q : (c < 2 * packs ? k : v);
    reinterpret_cast<Vec<T>*>(dst + r * n_embd)[c % packs] = z;
  }
}

template <typename S, typename D>
__global__ void convert_kernel(const S* __restrict__ src, D* __restrict__ dst, std::int64_t rows, std::int64_t cols,
                               bool transpose) {
  const std::int64_t n = rows * cols;
  for (std::int64_t idx = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += std::int64_t(gridDim.x) * blockDim.x) {
    // transpose: dst [cols, rows]; dst idx = j * rows + i reads src[i, j].
    const std::int64_t s = transpose ? (idx % rows) * cols + idx / rows : idx;
    dst[idx] = from_float<D>(to_float(src[s]));
  }
}

template <typename T>
__global__ void random_kernel(T* __restrict__ dst, std::int64_t n, float mean, float std, std::uint64_t key) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    float value = mean;
    if (std != 0.f) {
      const std::uint64_t h = splitmix64(key ^ splitmix64(static_cast<std::uint64_t>(i)));
      // Box-Muller; u1 in (0, 1] keeps the log finite.
      const float u1 = 1.0f - uniform01(h);
      const float u2 = uniform01(splitmix64(h));
      value = mean + std * sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
    }
    dst[i] = from_float<T>(value);
  }
}

template <typename T>
__global__ void gather_rows_kernel(const T* __restrict__ src, const std::int32_t* __restrict__ rows, T* __restrict__ dst,
                                   int cols) {
  const std::int64_t r = blockIdx.x;
  const auto* in = reinterpret_cast<const Vec<T>*>(src + std::int64_t(rows[r]) * cols);
  auto* out = reinterpret_cast<Vec<T>*>(dst + r * cols);
  for (int c = threadIdx.x; c < cols / 8; c += blockDim.x) out[c] = in[c];
}

// ---------------------------------------------------------------- next-token selection
constexpr int kSelThreads = 1024;

// Order-preserving map of a float to an unsigned key (larger float -> larger key).
__device__ __forceinline__ unsigned order_key(float x) {
  const unsigned u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct ArgMax {
  float v;
  int i;
};

// The larger value wins; equal values: the smaller index (torch.argmax returns the first maximum).
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  if (b.v > a.v || (b.v == a.v && b.i < a.i)) return b;
  return a;
}

__device__ ArgMax block_argmax(ArgMax m, ArgMax* scratch) {
  for (int off = 16; off > 0; off /= 2) {
    ArgMax o{__shfl_xor_sync(kFullWarpMask, m.v, off), __shfl_xor_sync(kFullWarpMask, m.i, off)};
    m = better(m, o);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = lane < kSelThreads / 32 ? scratch[lane] : ArgMax{-INFINITY, INT_MAX};
    for (int off = 16; off > 0; off /= 2) {
      ArgMax o{__shfl_xor_sync(kFullWarpMask, m.v, off), __shfl_xor_sync(kFullWarpMask, m.i, off)};
      m = better(m, o);
    }
    if (lane == 0) scratch[32] = m;
  }
  __syncthreads();
  return scratch[32];
}

__global__ void __launch_bounds__(kSelThreads) select_kernel(const float* __restrict__ logits, int vocab,
                                                             const SampleParams* __restrict__ params, DecodeState st) {
  __shared__ ArgMax am_scratch[33];
  __shared__ float scratch[33];
  __shared__ float scan[kSelThreads];
  __shared__ int picked;
  const int b = blockIdx.x;
  const int tid = threadIdx.x;
  const float* row = logits + std::int64_t(b) * vocab;
  const SampleParams p = *params;

  // argmax first: the greedy choice, and the sampling fallback (rounding can leave the target
  // just past the last kept token).
  ArgMax m{-INFINITY, INT_MAX};
  // Unrolled so ~8 independent loads per thread are in flight (one block reads the whole row).
#pragma unroll 8
  for (int i = tid; i < vocab; i += kSelThreads) m = better(m, ArgMax{row[i], i});
  m = block_argmax(m, am_scratch);
  int token = m.i == INT_MAX ? 0 : m.i;  // all -inf/NaN: token 0 rather than an out-of-range id

  const int pos = st.positions[b];
  const int gen = pos + 1 - st.prompt_lens[b];
  if (p.do_sample && m.v > -INFINITY) {
    const float inv_t = 1.f / p.temperature;
    const float mx = m.v;
    auto weight = [&](float x) { return exp2f((x - mx) * inv_t * 1.4426950408889634f); };
    // Top-k threshold: the largest key t with count(key >= t) >= k (ties with the k-th value stay,
    // as in HF's TopKLogitsWarper).
    unsigned tau = 0;
    if (p.top_k > 0 && p.top_k < vocab) {
      std::uint64_t lo = 0, hi = order_key(mx);
      while (lo < hi) {
        const std::uint64_t mid = lo + (hi - lo + 1) / 2;
        float cnt = 0.f;
        for (int i = tid; i < vocab; i += kSelThreads) cnt += order_key(row[i]) >= mid ? 1.f : 0.f;
        cnt = block_allreduce<kSelThreads>(cnt, SumCombine{}, scratch);
        if (cnt >= float(p.top_k)) lo = mid; else hi = mid - 1;
      }
      tau = static_cast<unsigned>(lo);
    }
    auto mass_at_least = [&](unsigned t) {
      float s = 0.f;
      for (int i = tid; i < vocab; i += kSelThreads) {
        const float x = row[i];
        if (order_key(x) >= t) s += weight(x);
      }
      return block_allreduce<kSelThreads>(s, SumCombine{}, scratch);
    };
    // Top-p threshold: the largest key t with mass(key >= t) >= top_p * mass(top-k set): the
    // smallest head of the sorted distribution holding top_p (HF's TopPLogitsWarper).
    if (p.top_p < 1.f) {
      const float need = p.top_p * mass_at_least(tau);
      std::uint64_t lo = tau, hi = order_key(mx);
      while (lo < hi) {
        const std::uint64_t mid = lo + (hi - lo + 1) / 2;
        if (mass_at_least(static_cast<unsigned>(mid)) >= need) lo = mid; else hi = mid - 1;
      }
      tau = static_cast<unsigned>(lo);
    }
    // Inverse-CDF draw over the kept tokens in index order: per-thread contiguous chunks, a block
    // scan of the chunk sums, then the owning thread walks its chunk.
    const int chunk = (vocab + kSelThreads - 1) / kSelThreads;
    const int begin = min(vocab, tid * chunk), end = min(vocab, begin + chunk);
    float s = 0.f;
    for (int i = begin; i < end; ++i) {
      const float x = row[i];
      if (order_key(x) >= tau) s += weight(x);
    }
    scan[tid] = s;
    if (tid == 0) picked = -1;
    __syncthreads();
    for (int off = 1; off < kSelThreads; off *= 2) {
      const float add = tid >= off ? scan[tid - off] : 0.f;
      __syncthreads();
      scan[tid] += add;
      __syncthreads();
    }
    const float total = scan[kSelThreads - 1];
    const std::uint64_t h = splitmix64(p.seed ^ splitmix64((std::uint64_t(b) << 32) | std::uint32_t(gen)));
    const float target = uniform01(h) * total;
    const float incl = scan[tid], excl = incl - s;
    if (s > 0.f && target >= excl && target < incl) {
      float acc = excl;
      int last = -1;
      for (int i = begin; i < end; ++i) {
        const float x = row[i];
        if (order_key(x) < tau) continue;
        last = i;
        acc += weight(x);
        if (acc > target) break;
      }
      atomicMax(&picked, last);  // exactly one thread qualifies unless rounding ties two ends
    }
    __syncthreads();
    if (picked >= 0) token = picked;
  }

  if (tid == 0) {
    const bool done = st.finished[b] != 0;
    if (done && p.eos >= 0) token = p.eos;
    if (gen >= 0 && gen < p.max_new) st.out_tokens[std::int64_t(b) * st.out_stride + gen] = token;
    if (!done && p.eos >= 0 && token == p.eos) st.finished[b] = 1;
    st.tokens[b] = token;
    st.positions[b] = pos + 1;
  }
}

template <typename Fn>
void with_dtype(DType dtype, Fn&& fn) {
  dispatch_dtype(dtype, kOp, std::forward<Fn>(fn));
}

}  // namespace

void embed(const void* wte, const void* wpe, const std::int32_t* tokens, const std::int32_t* positions, void* h,
           std::int64_t rows, std::int64_t n_embd, DType dtype, const std::int32_t* page_table, std::int64_t max_pages,
           std::int64_t page_size, std::int64_t* slots, std::int32_t* seq_lens, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch_half_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    embed_kernel<T><<<static_cast<unsigned>(rows), 128, 0, stream>>>(
        static_cast<const T*>(wte), static_cast<const T*>(wpe), tokens, positions, static_cast<T*>(h),
        static_cast<int>(n_embd), page_table, static_cast<int>(max_pages), static_cast<int>(page_size), slots, seq_lens);
    FK_CHECK_LAUNCH();
  });
}

void split_qkv(const void* qkv, const void* bias, void* q, void* k, void* v, std::int64_t rows, std::int64_t n_embd,
               DType dtype, cudaStream_t stream) {
  if (rows == 0) return;
  dispatch_half_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    split_qkv_kernel<T><<<static_cast<unsigned>(rows), 128, 0, stream>>>(
        static_cast<const T*>(qkv), static_cast<const T*>(bias), static_cast<T*>(q), static_cast<T*>(k),
        static_cast<T*>(v), static_cast<int>(n_embd));
    FK_CHECK_LAUNCH();
  });
}

void convert_weight(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::int64_t rows, std::int64_t cols,
                    bool transpose, cudaStream_t stream) {
  const std::int64_t n = rows * cols;
  if (n == 0) return;
  const unsigned grid = detail::grid_for(n, 256, detail::current_sm_count());
  with_dtype(src_dtype, [&](auto stag) {
    using S = typename decltype(stag)::type;
    with_dtype(dst_dtype, [&](auto dtag) {
      using D = typename decltype(dtag)::type;
      convert_kernel<S, D><<<grid, 256, 0, stream>>>(static_cast<const S*>(src), static_cast<D*>(dst), rows, cols,
                                                      transpose);
      FK_CHECK_LAUNCH();
    });
  });
}

void fill_random(void* dst, DType dtype, std::int64_t n, float mean, float std, std::uint64_t seed,
                 std::uint64_t stream_id, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned grid = detail::grid_for(n, 256, detail::current_sm_count());
  const std::uint64_t key = splitmix64(seed) ^ splitmix64(stream_id * 0x2545F4914F6CDD1Dull + 1);
  with_dtype(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    random_kernel<T><<<grid, 256, 0, stream>>>(static_cast<T*>(dst), n, mean, std, key);
    FK_CHECK_LAUNCH();
  });
}

void gather_rows(const void* src, const std::int32_t* rows, void* dst, std::int64_t n, std::int64_t cols, DType dtype,
                 cudaStream_t stream) {
  if (n == 0) return;
  dispatch_half_dtype(dtype, kOp, [&](auto tag) {
    using T = typename decltype(tag)::type;
    gather_rows_kernel<T><<<static_cast<unsigned>(n), 128, 0, stream>>>(static_cast<const T*>(src), rows,
                                                                        static_cast<T*>(dst), static_cast<int>(cols));
    FK_CHECK_LAUNCH();
  });
}

void select_tokens(const float* logits, std::int64_t batch, std::int64_t vocab, const SampleParams* params,
                   const DecodeState& state, cudaStream_t stream) {
  if (batch == 0) return;
  select_kernel<<<static_cast<unsigned>(batch), kSelThreads, 0, stream>>>(logits, static_cast<int>(vocab), params,
                                                                         state);
  FK_CHECK_LAUNCH();
}

}  // namespace flashkernel::models::gpt2_detail
