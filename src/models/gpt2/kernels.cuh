// Device-side pieces of the GPT-2 engine that no other op provides: token + position embedding,
// QKV bias + head split, weight conversion / Conv1D transpose, seeded random init, and next-token
// selection (greedy / temperature + top-k + top-p sampling). Launchers are host functions.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "flashkernel/tensor.h"

namespace flashkernel::models::gpt2_detail {

// Per-row state of a generation batch on the device (the decode graph reads and advances it).
struct DecodeState {
  std::int32_t* tokens = nullptr;      // [B] input token of the next step (the last chosen one)
  std::int32_t* positions = nullptr;   // [B] its position
  std::int32_t* prompt_lens = nullptr; // [B]
  std::int32_t* finished = nullptr;    // [B] 1 after EOS
  std::int32_t* out_tokens = nullptr;  // [B, out_stride] generated tokens
  std::int64_t out_stride = 0;
};

// Sampling parameters live in device memory so a captured graph picks up a new seed / setting
// without recapture.
struct SampleParams {
  std::int32_t do_sample = 0;
  float temperature = 1.f;
  std::int32_t top_k = 0;   // 0: off
  float top_p = 1.f;        // >= 1: off
  std::int32_t eos = -1;    // < 0: none
  std::int32_t max_new = 0;
  std::uint64_t seed = 0;
};

// h[t] = wte[tokens[t]] + wpe[positions[t]] (model dtype). With page_table != nullptr (decode),
// also writes slots[t] (= page * page_size + offset of positions[t]) and seq_lens[t] = positions[t] + 1.
void embed(const void* wte, const void* wpe, const std::int32_t* tokens, const std::int32_t* positions, void* h,
           std::int64_t rows, std::int64_t n_embd, DType dtype, const std::int32_t* page_table, std::int64_t max_pages,
           std::int64_t page_size, std::int64_t* slots, std::int32_t* seq_lens, cudaStream_t stream);

// qkv [T, 3C] (no bias) + bias -> q, k, v each [T, C] (= [T, heads, head_dim]).
void split_qkv(const void* qkv, const void* bias, void* q, void* k, void* v, std::int64_t rows, std::int64_t n_embd,
               DType dtype, cudaStream_t stream);

// dst = convert(src) with src [rows, cols] row-major; transpose: dst is [cols, rows].
void convert_weight(const void* src, DType src_dtype, void* dst, DType dst_dtype, std::int64_t rows, std::int64_t cols,
                    bool transpose, cudaStream_t stream);

// dst[i] = mean + std * N(0, 1) from a counter-based hash of (seed, stream_id, i); std == 0 fills `mean`.
void fill_random(void* dst, DType dtype, std::int64_t n, float mean, float std, std::uint64_t seed,
                 std::uint64_t stream_id, cudaStream_t stream);

// Copies rows[i] of src [*, cols] to dst[i] (the last prompt token of each sequence).
void gather_rows(const void* src, const std::int32_t* rows, void* dst, std::int64_t n, std::int64_t cols, DType dtype,
                 cudaStream_t stream);

// One block per sequence: picks the next token from fp32 logits [B, vocab], records it at
// out_tokens[b, positions[b] + 1 - prompt_lens[b]], applies EOS bookkeeping, and advances
// tokens/positions for the next decode step.
void select_tokens(const float* logits, std::int64_t batch, std::int64_t vocab, const SampleParams* params,
                   const DecodeState& state, cudaStream_t stream);

// Decode projections for M <= kDecodeGemvMaxM rows (decode_gemv.cu): out = x w^T + bias, or with
// split > 0 the [q | k | v] columns written to q, k, v (each [m, split]). k % 8 == 0, 16-byte
// aligned x and w.
constexpr std::int64_t kDecodeGemvMaxM = 8;
bool decode_gemv_supported(std::int64_t m, std::int64_t k);
void decode_gemv(const void* x, const void* w, const void* bias, void* out, std::int64_t m, std::int64_t n,
                 std::int64_t k, DType dtype, void* q, void* kk, void* v, std::int64_t split, cudaStream_t stream);

// The fused decode layer's projections (FLASHKERNEL_GPT2_DECODE=fused): the same GEMV with the
// neighbouring per-op kernels folded in, so a layer is 5 kernels instead of 9.
//   input:  x [m, k], or (norm_in set) LayerNorm(norm_in rows) * gamma + beta rounded to the
//           model dtype, computed by every CTA into shared memory (the rows are 1.5-3 KB each);
//   output: kStore out = y; kAddTo out += y (the residual stream, in place: out = round(round(y) +
//           out), add_layernorm's sum); kGeluTanh out = gelu_tanh(y) (gelu_linear's epilogue);
//           kQkv: [q | k | v] columns, q to `q`, k and v to `k` and `v`, or with `pool` set into
//           the 16-bit paged cache at slots[r] (kv_cache_append's layout), y = x w^T + bias in fp32.
enum class GemvOut { kStore, kAddTo, kGeluTanh, kQkv };
struct FusedGemv {
  const void* x = nullptr;
  const void* norm_in = nullptr;  // non-null: x = LayerNorm(norm_in), norm_in [m, k]
  const void* gamma = nullptr;
  const void* beta = nullptr;
  float eps = 1e-5f;
  const void* w = nullptr;
  const void* bias = nullptr;
  std::int64_t m = 0, n = 0, k = 0;
  DType dtype = DType::kFloat16;
  GemvOut out_kind = GemvOut::kStore;
  void* out = nullptr;
  // kQkv: split = n / 3 columns per part; the cache layer's geometry in elements.
  void* q = nullptr;
  void* k_out = nullptr;
  void* v_out = nullptr;
  std::int64_t split = 0;
  void* pool = nullptr;  // the layer's first element
  std::int64_t num_slots = 0, page_size = 0, page_elems = 0, heads = 0, head_dim = 0;
  const std::int64_t* slots = nullptr;
};
// The fields every projection sets: y = x w^T + bias for m rows and the [n, k] weight w, written
// to out as `kind` says.
inline FusedGemv projection(const void* w, const void* bias, std::int64_t m, std::int64_t n, std::int64_t k,
                            DType dtype, GemvOut kind, void* out) {
  return FusedGemv{.w = w, .bias = bias, .m = m, .n = n, .k = k, .dtype = dtype, .out_kind = kind, .out = out};
}
// Whether fused_gemv serves m rows of a normalized input of k columns (the rows fit the kernel and
// m * k elements fit its shared memory).
bool fused_gemv_supported(std::int64_t m, std::int64_t k);
void fused_gemv(const FusedGemv& g, cudaStream_t stream);

}  // namespace flashkernel::models::gpt2_detail
