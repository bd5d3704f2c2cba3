// GPT2Engine::Impl (the engine's state) and the helpers its files share. Its members are defined in
// engine_weights.cu (construction, weights), engine_decode.cu (decode step, CUDA graphs, persistent
// decode) and engine.cu (buffers, layer stack, prefill; forward_logits and generate).
#pragma once
#include <cublas_v2.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/cuda_check.h"
#include "common/device_allocation.h"
#include "flashkernel/kv_cache.h"
#include "flashkernel/models/gpt2.h"
#include "models/gpt2/kernels.cuh"
#include "models/gpt2/persistent_decode.h"

#define FK_CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                         \
    cublasStatus_t st_ = (expr);                                                               \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                                        \
      throw CudaError(std::string("cuBLAS error ") + std::to_string(int(st_)) + " in " #expr); \
    }                                                                                          \
  } while (0)

namespace flashkernel::models {

namespace gpt2_detail {

inline constexpr const char* kOp = "gpt2";
inline constexpr std::int64_t kPageSize = 16;
inline constexpr std::size_t kAlign = 256;

// Makes the engine's device current for one public call and gives the caller's back afterwards:
// cudaSetDevice is per thread, and a caller (PyTorch) working on another GPU must not find its
// current device changed by the engine.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) {
    FK_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) FK_CUDA_CHECK(cudaSetDevice(device));
  }
  ~ScopedDevice() { detail::discard_cuda_error(cudaSetDevice(previous_)); }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;

 private:
  int previous_ = 0;
};

inline std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

}  // namespace gpt2_detail

// The engine files use the GPT-2 detail names (kernel launchers, DecodeState, ...) unqualified.
using namespace gpt2_detail;

struct TensorSlot {
  std::size_t offset = 0;               // bytes into the weight arena
  std::vector<std::int64_t> hf_shape;   // shape as HF stores it
  bool transpose = false;               // Conv1D [in, out] -> [out, in]
  bool loaded = false;
  float init_std = 0.f, init_mean = 0.f;  // init_random
};

// One sequence's share of a prefill pass: `count` tokens at positions start .. start + count - 1
// of the allocator's sequence `seq`, rows row .. row + count - 1 of the packed batch (prefill()
// sets `row`). With start > 0 they attend to the cached K/V of the positions before `start` too,
// read through `pages_dev` (the sequence's page list on the device).
struct PrefillPiece {
  std::int64_t seq = 0;
  std::int64_t start = 0;
  const std::int32_t* tokens = nullptr;
  std::int64_t count = 0;
  const std::int32_t* pages_dev = nullptr;
  std::int64_t row = 0;
};

// What one generation continues: the allocator's sequence `seq` (pages reserved for start +
// tokens + max_new_tokens) from position `start` with `tokens`.
struct GenerationInput {
  std::int64_t seq = 0;
  std::int64_t start = 0;
  std::vector<std::int32_t> tokens;
};

// A multi-turn sequence (GPT2Engine::open_sequence): the first `cached` tokens of its history
// have their K/V in the cache; `uncached` are the history's tokens after them (the last generated
// token, never fed through the model).
struct OpenSequence {
  std::int64_t alloc_id = -1;  // its sequence in the page allocator (-1: none yet)
  std::int64_t cached = 0;
  std::vector<std::int32_t> uncached;
  std::int64_t length() const { return cached + static_cast<std::int64_t>(uncached.size()); }
};

struct GPT2Engine::Impl {
  GPT2Config cfg;
  DType dtype;
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  detail::DeviceAllocation weights, blas_ws, acts, kv_pool, paged_ws, state, staging;
  // K and V of one sequence's cached prefix, gathered per layer for prefill over a history:
  // [n_head, n_positions, head_dim] each (grown on the first continuation).
  detail::DeviceAllocation context_kv;
  std::map<std::int64_t, OpenSequence> open_seqs;
  std::int64_t next_open_id = 1;
  // Held by every public method of GPT2Engine (but device()/config()/dtype(), which never change):
  // buffers, the page allocator, the stream and graph capture are shared by all calls.
  mutable std::mutex mutex;
  std::map<std::string, TensorSlot> slots;
  std::size_t elem = 2;

  // Activation buffers (byte offsets into `acts`) for up to act_rows tokens.
  std::int64_t act_rows = 0;
  void *h = nullptr, *x = nullptr, *qkv = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *att = nullptr,
       *y = nullptr, *a = nullptr, *xl = nullptr;
  float* logits = nullptr;
  std::int32_t *tok = nullptr, *pos = nullptr, *rows_last = nullptr;
  std::int64_t* kv_slots = nullptr;

  // Decode state for up to state_batch sequences.
  std::int64_t state_batch = 0;
  DecodeState ds;
  std::int32_t *page_table = nullptr, *seq_lens = nullptr;
  std::int64_t* dec_slots = nullptr;
  SampleParams* params = nullptr;
  std::int64_t max_pages = 0;  // page-table row stride: enough pages for n_positions tokens

  KVCacheLayout layout;
  std::unique_ptr<KVPageAllocator> pages;
  // The cache's element type (dtype, or float8_e4m3fn) and, for FP8, its scales: k then v, each
  // [n_layer, n_head] float32, all 1.0.
  DType kv_dtype = DType::kFloat16;
  detail::DeviceAllocation kv_scales;
  KVScales cache_scales() const {
    if (kv_dtype != DType::kFloat8E4M3) return {};
    const auto* s = kv_scales.as<float>(0);
    return {s, s + cfg.n_layer * cfg.n_head};
  }

  std::map<std::pair<std::int64_t, std::int64_t>, cudaGraphExec_t> graphs;
  // Decode projections on decode_gemv (default) or cuBLAS (FLASHKERNEL_GPT2_DECODE_GEMM=cublas,
  // kept as a cross-check of the custom kernel).
  bool use_decode_gemv = true;
  // The decode step's path (DecodePath in the public header; FLASHKERNEL_GPT2_DECODE at
  // construction, then set_decode_path). kAuto's choice: fused up to kAutoFusedMaxBatch rows on
  // sm_90+ (H100: 278 vs 440 us per step for the plain graph at batch 1), else pdl (H200: 649 vs
  // 697 us for fused at batch 8). kPersistent measured no faster (H200: 437 vs 437 us per step at batch 1,
  // 1016 vs 751 at batch 8), so kAuto never takes it.
  DecodePath decode_path = DecodePath::kAuto;
  bool use_persistent() const { return decode_path == DecodePath::kPersistent; }
  bool use_dependent_launches() const { return decode_path != DecodePath::kGraph && !use_persistent(); }
  double persistent_timeout_ms = 1000.0;  // grid-barrier watchdog (FLASHKERNEL_GPT2_PERSISTENT_TIMEOUT_MS)
  int persistent_drop_arrival = -1;       // test hook (FLASHKERNEL_GPT2_PERSISTENT_DROP_BARRIER)
  int persistent_drop_copy = -1;          // test hook (FLASHKERNEL_GPT2_PERSISTENT_DROP_COPY)
  detail::DeviceAllocation persist_layers;  // PersistentLayer[n_layer], built once (weights never move)
  detail::DeviceAllocation persist_sync;    // {barrier count, fault}
  // FLASHKERNEL_GPT2_PERSISTENT_TRACE=<file>: the last persistent step's stage timestamps (CTA 0,
  // global timer) are written there as CSV after each generate (a debugging aid).
  std::string persistent_trace_path;
  detail::DeviceAllocation persist_trace;
  std::map<std::pair<std::int64_t, std::int64_t>, bool> graph_persistent;

  Impl(const GPT2Config& c, DType d, int dev);
  ~Impl();

  void clear_graphs();

  // Throws ArgumentError naming the first tensor never loaded.
  void check_loaded() const;

  // The ensure_* functions below drop everything derived from a buffer (sizes, pointers into it,
  // graphs captured with those pointers) BEFORE regrowing it. If the allocation then fails (out of
  // memory), the engine is left with an empty buffer that the next call grows again, never with a
  // size that still claims the freed memory (the next, smaller call would write into it).
  void drop_acts();
  void drop_state();
  void drop_pool();

  const void* w(const std::string& name) const { return weights.as<char>(slots.at(name).offset); }
  std::string L(std::int64_t l, const char* rest) const { return "h." + std::to_string(l) + "." + rest; }

  void gemm(const void* in, const void* weight, void* out, std::int64_t m, std::int64_t n, std::int64_t k,
            bool out_f32);

  void ensure_acts(std::int64_t rows);
  void ensure_state(std::int64_t batch);
  // Grows the pool to at least num_pages pages. Open sequences' K/V are carried over (copied to
  // pages of the new pool; both pools are held meanwhile); if that fails they keep the old pool.
  void ensure_pool(std::int64_t num_pages);
  std::int64_t pages_in_use() const { return pages ? pages->num_pages() - pages->num_free_pages() : 0; }
  void ensure_context();

  // Runs every layer over `rows` tokens whose h = embedding is already in `h`, ending with ln_f(h)
  // in `x`. Prefill (pieces given): flash attention per piece over its cached prefix and its own
  // tokens (causal, bottom-right). Decode: paged decode attention over the cache, one token per
  // sequence.
  void layers(std::int64_t rows, const std::int64_t* slots_dev, const std::vector<PrefillPiece>* pieces,
              std::int64_t decode_max_seq_len);

  // The decode step's layers as 5 kernels each (FLASHKERNEL_GPT2_DECODE=fused): QKV with LN1 and
  // the KV append folded in, paged decode attention, the output projection adding into h, FC1
  // with LN2 and GeLU, FC2 adding into h; then ln_f(h) into x. Where fused_decode_supported().
  void fused_decode_layers(std::int64_t rows, std::int64_t max_seq_len);
  bool fused_decode_supported(std::int64_t rows) const;

  // One packed prefill pass over `pieces` (their pages reserved): writes their K/V into the cache
  // and leaves ln_f(h) of every token in x (rows in piece order; sets each piece's `row`).
  void prefill(std::vector<PrefillPiece>& pieces);

  // The generation behind generate() and generate_continue(): prefill of every input (in chunks
  // of options.prefill_chunk tokens when set), the first token, then the decode steps. Fills
  // result [B][max_new_tokens] and produced[b], the columns of row b that are generated tokens
  // (through the first EOS).
  void generate_tokens(const std::vector<GenerationInput>& inputs, const GenerationOptions& options,
                       std::vector<std::vector<std::int32_t>>* result, std::vector<std::int64_t>* produced,
                       GenerationStats* stats);

  PersistentDecodeArgs persistent_args(std::int64_t B, std::int64_t max_seq_len);
  // Paged decode attention of `rows` sequences over this engine's cache (q -> att); the caller
  // sets the layer, the scale and the workspace.
  PagedDecodeArgs paged_decode_args(std::int64_t rows, std::int64_t max_seq_len) const;
  // The paged cache as both decode paths read it (PagedDecodeArgs and PersistentDecodeArgs name
  // these fields alike).
  template <typename Args>
  void set_cache_view(Args& a, std::int64_t max_seq_len) const {
    a.pool = kv_pool.get();
    a.layout = layout;
    a.page_table = page_table;
    a.max_pages = max_pages;
    a.seq_lens = seq_lens;
    a.max_seq_len = max_seq_len;
    if constexpr (std::is_same_v<Args, PagedDecodeArgs>) a.scales = cache_scales();
  }

  // The per-layer weight table of the persistent kernel and its barrier words, made once.
  void ensure_persistent_tables();

  std::size_t trace_slots() const { return 2 + 10 * static_cast<std::size_t>(cfg.n_layer); }

  // Writes the last persistent step's trace (FLASHKERNEL_GPT2_PERSISTENT_TRACE): one row per
  // timestamp, in ns since the kernel's entry. `step_us`: the measured mean step, for comparison.
  void write_persistent_trace(double step_us);

  // Throws if a persistent step of the last generation timed out at a grid barrier (and clears
  // the flag). Every step after the first timeout ended at once, so the tokens are invalid.
  void check_persistent_fault();

  void decode_step(std::int64_t B, std::int64_t max_seq_len, const PersistentDecodePlan* plan);
  cudaGraphExec_t decode_graph(std::int64_t B, std::int64_t max_seq_len, std::int64_t* captures);
};

}  // namespace flashkernel::models
