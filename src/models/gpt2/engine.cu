// GPT2Engine: weight arena, packed prefill, CUDA-graph-captured decode step, generate loop.
#include <cublas_v2.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "common/arg_check.h"
#include "common/cuda_check.h"
#include "common/device_allocation.h"
#include "common/launch.h"
#include "flashkernel/attention.h"
#include "flashkernel/device_info.h"
#include "flashkernel/gelu_linear.h"
#include "flashkernel/kv_cache.h"
#include "flashkernel/layernorm.h"
#include "flashkernel/models/gpt2.h"
#include "models/gpt2/kernels.cuh"
#include "models/gpt2/persistent_decode.h"

namespace flashkernel::models {

using namespace gpt2_detail;

namespace {

constexpr const char* kOp = "gpt2";
constexpr std::int64_t kPageSize = 16;
constexpr std::size_t kAlign = 256;
// Decode graphs are keyed by a max sequence length rounded up to this, so batches of similar
// length share one capture (a larger bound only adds idle split-KV blocks).
constexpr std::int64_t kSeqBucket = 64;
// All-finished checks happen every this many decode steps: one host sync per 8 tokens.
constexpr std::int64_t kFinishCheckEvery = 8;

#define FK_CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                         \
    cublasStatus_t st_ = (expr);                                                               \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                                        \
      throw CudaError(std::string("cuBLAS error ") + std::to_string(int(st_)) + " in " #expr); \
    }                                                                                          \
  } while (0)

cudaDataType_t cuda_type(DType d) {
  return d == DType::kFloat16 ? CUDA_R_16F : (d == DType::kBFloat16 ? CUDA_R_16BF : CUDA_R_32F);
}

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

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// load_tensor(on_device=true) launches a kernel that reads `data`: it must be memory this device
// can read, i.e. allocated on it (or managed). A pointer on another GPU would need peer access, a
// host pointer would fault (or, on systems that let the GPU read pageable memory, only be slow).
void check_device_pointer(const void* data, int device, const std::string& name) {
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, data);
  detail::discard_cuda_error(err);  // "not a CUDA pointer" is an answer here, not a failure
  const bool ok = err == cudaSuccess && (attr.type == cudaMemoryTypeManaged ||
                                         (attr.type == cudaMemoryTypeDevice && attr.device == device));
  if (ok) return;
  std::string got = "host memory";
  if (err == cudaSuccess && attr.type == cudaMemoryTypeDevice) got = "memory of device " + std::to_string(attr.device);
  detail::require(false, kOp, name.c_str(),
                  "is passed as device memory (on_device) but is " + got + "; the engine is on device " +
                      std::to_string(device));
}

}  // namespace

struct TensorSlot {
  std::size_t offset = 0;               // bytes into the weight arena
  std::vector<std::int64_t> hf_shape;   // shape as HF stores it
  bool transpose = false;               // Conv1D [in, out] -> [out, in]
  bool loaded = false;
  float init_std = 0.f, init_mean = 0.f;  // init_random
};

struct GPT2Engine::Impl {
  GPT2Config cfg;
  DType dtype;
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  detail::DeviceAllocation weights, blas_ws, acts, kv_pool, paged_ws, state, staging;
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

  std::map<std::pair<std::int64_t, std::int64_t>, cudaGraphExec_t> graphs;
  // Decode projections on decode_gemv (default) or cuBLAS (FLASHKERNEL_GPT2_DECODE_GEMM=cublas,
  // kept as a cross-check of the custom kernel).
  bool use_decode_gemv = true;
  // Decode step as the CUDA graph of one kernel per op (default), or on the persistent kernel
  // (persistent_decode.cu; FLASHKERNEL_GPT2_DECODE=persistent), which falls back to the graph
  // wherever its plan is unsupported (batch > 8, n_embd > 1024, no cooperative launch, ...). The
  // persistent step is not the default because it measured no faster (H200: 437 vs 437 us per
  // step at batch 1, 1016 vs 751 us at batch 8; docs/ops/gpt2.md).
  bool use_persistent = false;
  double persistent_timeout_ms = 1000.0;  // grid-barrier watchdog (FLASHKERNEL_GPT2_PERSISTENT_TIMEOUT_MS)
  int persistent_drop_arrival = -1;       // test hook (FLASHKERNEL_GPT2_PERSISTENT_DROP_BARRIER)
  detail::DeviceAllocation persist_layers;  // PersistentLayer[n_layer], built once (weights never move)
  detail::DeviceAllocation persist_sync;    // {barrier count, fault}
  // FLASHKERNEL_GPT2_PERSISTENT_TRACE=<file>: the last persistent step's stage timestamps (CTA 0,
  // global timer) are written there as CSV after each generate (a debugging aid).
  std::string persistent_trace_path;
  detail::DeviceAllocation persist_trace;
  std::map<std::pair<std::int64_t, std::int64_t>, bool> graph_persistent;

  Impl(const GPT2Config& c, DType d, int dev) : cfg(c), dtype(d), device(dev) {
    const char* env = std::getenv("FLASHKERNEL_GPT2_DECODE_GEMM");
    use_decode_gemv = env == nullptr || std::string(env) != "cublas";
    if (const char* mode = std::getenv("FLASHKERNEL_GPT2_DECODE")) {
      const std::string m(mode);
      detail::require(m == "graph" || m == "persistent" || m.empty(), kOp, "FLASHKERNEL_GPT2_DECODE",
                      "must be 'graph' or 'persistent', got '" + m + "'");
      use_persistent = m == "persistent";
    }
    if (const char* t = std::getenv("FLASHKERNEL_GPT2_PERSISTENT_TIMEOUT_MS")) {
      char* end = nullptr;
      persistent_timeout_ms = std::strtod(t, &end);
      detail::require(end != t && *end == '\0' && persistent_timeout_ms > 0, kOp,
                      "FLASHKERNEL_GPT2_PERSISTENT_TIMEOUT_MS", std::string("must be a number > 0, got '") + t + "'");
    }
    if (const char* k = std::getenv("FLASHKERNEL_GPT2_PERSISTENT_DROP_BARRIER")) persistent_drop_arrival = std::atoi(k);
    if (const char* t = std::getenv("FLASHKERNEL_GPT2_PERSISTENT_TRACE")) persistent_trace_path = t;
  }

  ~Impl() {
    clear_graphs();
    if (blas) cublasDestroy(blas);
    if (stream) detail::discard_cuda_error(cudaStreamDestroy(stream));
    // The DeviceAllocation members free themselves.
  }

  void clear_graphs() {
    for (auto& [key, g] : graphs) detail::discard_cuda_error(cudaGraphExecDestroy(g));
    graphs.clear();
    graph_persistent.clear();
  }

  // Throws ArgumentError naming the first tensor never loaded.
  void check_loaded() const {
    for (const auto& [name, s] : slots) detail::require(s.loaded, kOp, name.c_str(), "was never loaded");
  }

  // The ensure_* functions below drop everything derived from a buffer (sizes, pointers into it,
  // graphs captured with those pointers) BEFORE regrowing it. If the allocation then fails (out of
  // memory), the engine is left with an empty buffer that the next call grows again, never with a
  // size that still claims the freed memory (the next, smaller call would write into it).
  void drop_acts() {
    clear_graphs();
    act_rows = 0;
    h = x = qkv = q = k = v = att = y = a = xl = nullptr;
    tok = pos = rows_last = nullptr;
    kv_slots = nullptr;
  }

  void drop_state() {
    clear_graphs();
    state_batch = 0;
    ds = DecodeState{};
    page_table = seq_lens = nullptr;
    dec_slots = nullptr;
    params = nullptr;
    logits = nullptr;
  }

  void drop_pool() {
    clear_graphs();
    pages.reset();
    layout = KVCacheLayout{};
  }

  const void* w(const std::string& name) const { return weights.as<char>(slots.at(name).offset); }
  std::string L(std::int64_t l, const char* rest) const { return "h." + std::to_string(l) + "." + rest; }

  void gemm(const void* in, const void* weight, void* out, std::int64_t m, std::int64_t n, std::int64_t k,
            bool out_f32) {
    if (m == 0) return;
    const float alpha = 1.f, beta = 0.f;
    // Row-major out[m, n] = in[m, k] @ weight[n, k]^T is column-major out^T = weight^T(op T) * in^T.
    FK_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                                 static_cast<int>(k), &alpha, weight, cuda_type(dtype), static_cast<int>(k), in,
                                 cuda_type(dtype), static_cast<int>(k), &beta, out,
                                 out_f32 ? CUDA_R_32F : cuda_type(dtype), static_cast<int>(n), CUBLAS_COMPUTE_32F,
                                 CUBLAS_GEMM_DEFAULT));
  }

  void ensure_acts(std::int64_t rows) {
    if (rows <= act_rows) return;
    const std::int64_t r = std::max({rows, act_rows, std::int64_t(8)});
    const std::int64_t C = cfg.n_embd;
    std::size_t off = 0;
    std::vector<std::pair<void**, std::size_t>> plan = {
        {&h, r * C * elem},     {&x, r * C * elem},  {&qkv, r * 3 * C * elem}, {&q, r * C * elem},
        {&k, r * C * elem},     {&v, r * C * elem},  {&att, r * C * elem},     {&y, r * C * elem},
        {&a, r * 4 * C * elem}, {&xl, r * C * elem},
        {reinterpret_cast<void**>(&tok), r * 4},     {reinterpret_cast<void**>(&pos), r * 4},
        {reinterpret_cast<void**>(&rows_last), r * 4}, {reinterpret_cast<void**>(&kv_slots), r * 8}};
    std::vector<std::size_t> offsets;
    for (auto& [p, bytes] : plan) {
      offsets.push_back(off);
      off += align_up(bytes);
    }
    drop_acts();
    acts.grow(off, "gpt2 engine: activations");
    for (std::size_t i = 0; i < plan.size(); ++i) *plan[i].first = acts.as<char>(offsets[i]);
    act_rows = r;
  }

  void ensure_state(std::int64_t batch) {
    if (batch <= state_batch) return;
    const std::int64_t B = std::max<std::int64_t>(batch, 8);
    max_pages = detail::ceil_div(cfg.n_positions, kPageSize);
    std::size_t off = 0;
    auto take = [&](std::size_t bytes) {
      const std::size_t o = off;
      off += align_up(bytes);
      return o;
    };
    const std::size_t o_tok = take(B * 4), o_pos = take(B * 4), o_plen = take(B * 4), o_fin = take(B * 4),
                      o_out = take(B * cfg.n_positions * 4), o_pt = take(B * max_pages * 4), o_sl = take(B * 4),
                      o_slots = take(B * 8), o_par = take(sizeof(SampleParams)),
                      o_logits = take(B * cfg.vocab_size * 4);
    drop_state();
    state.grow(off, "gpt2 engine: decode state");
    ds.tokens = state.as<std::int32_t>(o_tok);
    ds.positions = state.as<std::int32_t>(o_pos);
    ds.prompt_lens = state.as<std::int32_t>(o_plen);
    ds.finished = state.as<std::int32_t>(o_fin);
    ds.out_tokens = state.as<std::int32_t>(o_out);
    ds.out_stride = cfg.n_positions;
    page_table = state.as<std::int32_t>(o_pt);
    seq_lens = state.as<std::int32_t>(o_sl);
    dec_slots = state.as<std::int64_t>(o_slots);
    params = state.as<SampleParams>(o_par);
    logits = state.as<float>(o_logits);
    state_batch = B;
  }

  void ensure_pool(std::int64_t num_pages) {
    if (pages && pages->num_pages() >= num_pages) return;
    KVCacheLayout grown;
    grown.num_layers = cfg.n_layer;
    grown.num_pages = std::max<std::int64_t>(num_pages, pages ? pages->num_pages() : 0);
    grown.page_size = kPageSize;
    grown.num_kv_heads = cfg.n_head;
    grown.head_dim = cfg.head_dim();
    grown.dtype = dtype;
    validate_kv_layout(grown, kOp);
    drop_pool();
    kv_pool.grow(grown.bytes(), "gpt2 engine: KV cache pool");
    pages = std::make_unique<KVPageAllocator>(grown.num_pages, kPageSize, cfg.n_layer);
    layout = grown;
  }

  // Runs every layer over `rows` tokens whose h = embedding is already in `h`, ending with ln_f(h)
  // in `x`. Prefill (seq_offsets given): flash attention per sequence over its own tokens.
  // Decode: paged decode attention over the cache, one token per sequence.
  void layers(std::int64_t rows, const std::int64_t* slots_dev, const std::vector<std::int64_t>* seq_offsets,
              std::int64_t decode_max_seq_len) {
    const std::int64_t C = cfg.n_embd, H = cfg.n_head, D = cfg.head_dim();
    const float eps = cfg.layer_norm_epsilon;
    const float scale = 1.f / std::sqrt(float(D));
    add_layernorm(h, nullptr, nullptr, w(L(0, "ln_1.weight")), w(L(0, "ln_1.bias")), x, nullptr, rows, C, eps, dtype,
                  stream);
    for (std::int64_t l = 0; l < cfg.n_layer; ++l) {
      const bool gemv = seq_offsets == nullptr && use_decode_gemv && decode_gemv_supported(rows, 4 * C);
      if (gemv) {
        decode_gemv(x, w(L(l, "attn.c_attn.weight")), w(L(l, "attn.c_attn.bias")), nullptr, rows, 3 * C, C, dtype, q,
                    k, v, C, stream);
      } else {
        gemm(x, w(L(l, "attn.c_attn.weight")), qkv, rows, 3 * C, C, false);
        split_qkv(qkv, w(L(l, "attn.c_attn.bias")), q, k, v, rows, C, dtype, stream);
      }
      kv_cache_append(kv_pool.get(), layout, l, slots_dev, rows, k, v, stream);
      if (seq_offsets != nullptr) {
        for (std::size_t s = 0; s + 1 < seq_offsets->size(); ++s) {
          const std::int64_t o = (*seq_offsets)[s], len = (*seq_offsets)[s + 1] - o;
          AttentionShape sh;
          sh.batch = 1;
          sh.heads_q = sh.heads_kv = H;
          sh.seq_q = sh.seq_k = len;
          sh.head_dim = D;
          for (auto* st : {sh.q_stride, sh.k_stride, sh.v_stride, sh.o_stride}) {
            st[0] = len * C;  // one sequence: the batch stride is never stepped
            st[1] = D;
            st[2] = C;
          }
          const std::size_t bo = o * C * elem;
          flash_attention(static_cast<char*>(q) + bo, static_cast<char*>(k) + bo, static_cast<char*>(v) + bo,
                          static_cast<char*>(att) + bo, nullptr, sh, dtype, /*causal=*/true, scale, stream);
        }
      } else {
        PagedDecodeArgs pa;
        pa.q = q;
        pa.out = att;
        pa.batch = rows;
        pa.num_q_heads = H;
        pa.pool = kv_pool.get();
        pa.layout = layout;
        pa.layer = l;
        pa.page_table = page_table;
        pa.max_pages = max_pages;
        pa.seq_lens = seq_lens;
        pa.max_seq_len = decode_max_seq_len;
        pa.scale = scale;
        pa.workspace = paged_ws.get();
        pa.workspace_bytes = paged_ws.bytes();
        paged_decode_attention(pa, stream);
      }
      // The GEMV adds the projection bias itself (rounded once with the product, as HF's Conv1D);
      // on the cuBLAS path add_layernorm adds it.
      if (gemv) {
        decode_gemv(att, w(L(l, "attn.c_proj.weight")), w(L(l, "attn.c_proj.bias")), y, rows, C, C, dtype, nullptr,
                    nullptr, nullptr, 0, stream);
      } else {
        gemm(att, w(L(l, "attn.c_proj.weight")), y, rows, C, C, false);
      }
      add_layernorm(y, h, gemv ? nullptr : w(L(l, "attn.c_proj.bias")), w(L(l, "ln_2.weight")), w(L(l, "ln_2.bias")),
                    x, h, rows, C, eps, dtype, stream);
      gelu_linear(x, w(L(l, "mlp.c_fc.weight")), w(L(l, "mlp.c_fc.bias")), a, rows, 4 * C, C, dtype,
                  GeluApproximation::kTanh, stream);
      if (gemv) {
        decode_gemv(a, w(L(l, "mlp.c_proj.weight")), w(L(l, "mlp.c_proj.bias")), y, rows, C, 4 * C, dtype, nullptr,
                    nullptr, nullptr, 0, stream);
      } else {
        gemm(a, w(L(l, "mlp.c_proj.weight")), y, rows, C, 4 * C, false);
      }
      const bool last = l + 1 == cfg.n_layer;
      add_layernorm(y, h, gemv ? nullptr : w(L(l, "mlp.c_proj.bias")), w(last ? "ln_f.weight" : L(l + 1, "ln_1.weight")),
                    w(last ? "ln_f.bias" : L(l + 1, "ln_1.bias")), x, h, rows, C, eps, dtype, stream);
    }
  }

  // Prefill of packed prompts: reserves each sequence's pages for prompt + `reserve_new` tokens,
  // writes the KV cache, and leaves ln_f(h) of every token in x.
  void prefill(const std::vector<std::vector<std::int32_t>>& prompts, const std::vector<std::int64_t>& seq_ids,
               std::vector<std::int64_t>* offsets_out) {
    std::vector<std::int32_t> htok, hpos;
    std::vector<std::int64_t> hslots, offsets{0};
    for (std::size_t s = 0; s < prompts.size(); ++s) {
      const auto& pg = pages->pages(seq_ids[s]);
      for (std::size_t i = 0; i < prompts[s].size(); ++i) {
        htok.push_back(prompts[s][i]);
        hpos.push_back(static_cast<std::int32_t>(i));
        hslots.push_back(std::int64_t(pg[i / kPageSize]) * kPageSize + std::int64_t(i % kPageSize));
      }
      offsets.push_back(static_cast<std::int64_t>(htok.size()));
    }
    const std::int64_t T = static_cast<std::int64_t>(htok.size());
    FK_CUDA_CHECK(cudaMemcpyAsync(tok, htok.data(), T * 4, cudaMemcpyHostToDevice, stream));
    FK_CUDA_CHECK(cudaMemcpyAsync(pos, hpos.data(), T * 4, cudaMemcpyHostToDevice, stream));
    FK_CUDA_CHECK(cudaMemcpyAsync(kv_slots, hslots.data(), T * 8, cudaMemcpyHostToDevice, stream));
    embed(w("wte.weight"), w("wpe.weight"), tok, pos, h, T, cfg.n_embd, dtype, nullptr, 0, kPageSize, nullptr, nullptr,
          stream);
    layers(T, kv_slots, &offsets, 0);
    // The host vectors must outlive the async copies.
    FK_CUDA_CHECK(cudaStreamSynchronize(stream));
    *offsets_out = offsets;
  }

  PersistentDecodeArgs persistent_args(std::int64_t B, std::int64_t max_seq_len) {
    PersistentDecodeArgs pa;
    pa.layers = persist_layers.as<PersistentLayer>(0);
    pa.n_layer = cfg.n_layer;
    pa.batch = B;
    pa.n_embd = cfg.n_embd;
    pa.n_head = cfg.n_head;
    pa.head_dim = cfg.head_dim();
    pa.lnf_gamma = w("ln_f.weight");
    pa.lnf_beta = w("ln_f.bias");
    pa.h = h;
    pa.x_out = x;
    pa.q = q;
    pa.a = a;
    pa.workspace = paged_ws.get();
    pa.workspace_bytes = paged_ws.bytes();
    pa.pool = kv_pool.get();
    pa.layout = layout;
    pa.page_table = page_table;
    pa.max_pages = max_pages;
    pa.seq_lens = seq_lens;
    pa.slots = dec_slots;
    pa.max_seq_len = max_seq_len;
    pa.eps = cfg.layer_norm_epsilon;
    pa.scale = 1.f / std::sqrt(float(cfg.head_dim()));
    pa.sync = persist_sync.as<unsigned int>(0);
    pa.timeout_ms = persistent_timeout_ms;
    pa.drop_arrival = persistent_drop_arrival;
    pa.trace = persist_trace.get() != nullptr ? persist_trace.as<unsigned long long>(0) : nullptr;
    pa.dtype = dtype;
    return pa;
  }

  // The per-layer weight table of the persistent kernel and its barrier words, made once.
  void ensure_persistent_tables() {
    if (persist_sync.get() != nullptr) return;
    std::vector<PersistentLayer> table(cfg.n_layer);
    for (std::int64_t l = 0; l < cfg.n_layer; ++l) {
      table[l] = {w(L(l, "ln_1.weight")),        w(L(l, "ln_1.bias")),          w(L(l, "attn.c_attn.weight")),
                  w(L(l, "attn.c_attn.bias")),   w(L(l, "attn.c_proj.weight")), w(L(l, "attn.c_proj.bias")),
                  w(L(l, "ln_2.weight")),        w(L(l, "ln_2.bias")),          w(L(l, "mlp.c_fc.weight")),
                  w(L(l, "mlp.c_fc.bias")),      w(L(l, "mlp.c_proj.weight")),  w(L(l, "mlp.c_proj.bias"))};
    }
    persist_layers.grow(table.size() * sizeof(PersistentLayer), "gpt2 engine: persistent layer table");
    FK_CUDA_CHECK(cudaMemcpy(persist_layers.get(), table.data(), table.size() * sizeof(PersistentLayer),
                             cudaMemcpyHostToDevice));
    if (!persistent_trace_path.empty()) {
      persist_trace.grow(trace_slots() * sizeof(unsigned long long), "gpt2 engine: persistent trace");
      FK_CUDA_CHECK(cudaMemset(persist_trace.get(), 0, trace_slots() * sizeof(unsigned long long)));
    }
    persist_sync.grow(2 * sizeof(unsigned int), "gpt2 engine: persistent barrier");
    FK_CUDA_CHECK(cudaMemset(persist_sync.get(), 0, 2 * sizeof(unsigned int)));
  }

  std::size_t trace_slots() const { return 2 + 10 * static_cast<std::size_t>(cfg.n_layer); }

  // Writes the last persistent step's trace (FLASHKERNEL_GPT2_PERSISTENT_TRACE): one row per
  // timestamp, in ns since the kernel's entry. `step_us`: the measured mean step, for comparison.
  void write_persistent_trace(double step_us) {
    if (persist_trace.get() == nullptr) return;
    std::vector<unsigned long long> t(trace_slots());
    FK_CUDA_CHECK(cudaMemcpy(t.data(), persist_trace.get(), t.size() * sizeof(t[0]), cudaMemcpyDeviceToHost));
    std::FILE* f = std::fopen(persistent_trace_path.c_str(), "w");
    detail::require(f != nullptr, kOp, "FLASHKERNEL_GPT2_PERSISTENT_TRACE", "cannot open '" + persistent_trace_path + "'");
    std::fprintf(f, "event,layer,stage,ns\nmeasured_step,,,%.0f\n", step_us * 1e3);
    for (std::size_t i = 1; i < t.size(); ++i) {
      const std::size_t k = (i - 1) / 2;
      const char* what = i + 1 == t.size() ? "ln_f_done" : (i % 2 == 1 ? "reach_barrier" : "pass_barrier");
      std::fprintf(f, "%s,%zu,%zu,%lld\n", what, k / 5, k % 5 + 1, static_cast<long long>(t[i] - t[0]));
    }
    std::fclose(f);
  }

  // Throws if a persistent step of the last generation timed out at a grid barrier (and clears
  // the flag). Every step after the first timeout ended at once, so the tokens are invalid.
  void check_persistent_fault() {
    if (persist_sync.get() == nullptr) return;
    int fault = 0;
    FK_CUDA_CHECK(cudaMemcpy(&fault, persist_sync.as<unsigned int>(0) + 1, sizeof(int), cudaMemcpyDeviceToHost));
    if (fault == 0) return;
    FK_CUDA_CHECK(cudaMemset(persist_sync.as<unsigned int>(0) + 1, 0, sizeof(int)));
    const int layer = (fault - 1) / 5, stage = (fault - 1) % 5 + 1;
    throw CudaError("gpt2 engine: the persistent decode step stopped: a block waited more than " +
                    std::to_string(persistent_timeout_ms) + " ms at grid barrier " + std::to_string(fault - 1) +
                    " (layer " + std::to_string(layer) + ", after stage S" + std::to_string(stage) +
                    "); the generation's tokens are invalid");
  }

  void decode_step(std::int64_t B, std::int64_t max_seq_len, const PersistentDecodePlan* plan) {
    embed(w("wte.weight"), w("wpe.weight"), ds.tokens, ds.positions, h, B, cfg.n_embd, dtype, page_table, max_pages,
          kPageSize, dec_slots, seq_lens, stream);
    if (plan != nullptr) {
      persistent_decode(persistent_args(B, max_seq_len), *plan, stream);
    } else {
      layers(B, dec_slots, nullptr, max_seq_len);
    }
    gemm(x, w("wte.weight"), logits, B, cfg.vocab_size, cfg.n_embd, true);
    select_tokens(logits, B, cfg.vocab_size, params, ds, stream);
  }

  cudaGraphExec_t decode_graph(std::int64_t B, std::int64_t max_seq_len, std::int64_t* captures) {
    const auto key = std::make_pair(B, max_seq_len);
    if (auto it = graphs.find(key); it != graphs.end()) return it->second;
    // Workspace for the largest split count this shape can use, sized before capture.
    PagedDecodeArgs pa;
    pa.q = q;
    pa.out = att;
    pa.batch = B;
    pa.num_q_heads = cfg.n_head;
    pa.pool = kv_pool.get();
    pa.layout = layout;
    pa.page_table = page_table;
    pa.max_pages = max_pages;
    pa.seq_lens = seq_lens;
    pa.max_seq_len = max_seq_len;
    pa.scale = 1.f;
    std::size_t need = paged_decode_workspace_bytes(pa);
    PersistentDecodePlan plan;
    if (use_persistent && use_decode_gemv) {
      plan = plan_persistent_decode(persistent_args(B, max_seq_len));
      if (plan.supported) {
        ensure_persistent_tables();
        need = std::max(need, plan.workspace_bytes);
      }
    }
    if (need > paged_ws.bytes()) {
      clear_graphs();  // they were captured with the old workspace
      paged_ws.grow(need, "gpt2 engine: paged decode workspace");
    }
    cudaGraph_t graph = nullptr;
    FK_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      decode_step(B, max_seq_len, plan.supported ? &plan : nullptr);
    } catch (...) {
      // Ends the (now invalid) capture so the stream is usable again; its own error is not the
      // one to report.
      detail::discard_cuda_error(cudaStreamEndCapture(stream, &graph));
      if (graph) detail::discard_cuda_error(cudaGraphDestroy(graph));
      throw;
    }
    FK_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
    detail::discard_cuda_error(cudaGraphDestroy(graph));
    FK_CUDA_CHECK(err);
    graphs[key] = exec;
    graph_persistent[key] = plan.supported;
    ++*captures;
    return exec;
  }
};

// ------------------------------------------------------------------------------ GPT2Engine

GPT2Engine::GPT2Engine(const GPT2Config& config, DType dtype, int device)
    : config_(config), dtype_(dtype), impl_(std::make_unique<Impl>(config, dtype, device)) {
  config_.validate();
  detail::require(dtype == DType::kFloat16 || dtype == DType::kBFloat16, kOp, "dtype",
                  std::string("must be float16 or bfloat16, got ") + dtype_name(dtype));
  Impl& m = *impl_;
  const int devices = device_count();
  detail::require(devices > 0, kOp, "device", "cannot be used: no CUDA device is visible");
  if (device < 0) FK_CUDA_CHECK(cudaGetDevice(&m.device));
  detail::require(m.device < devices, kOp, "device",
                  "is " + std::to_string(m.device) + " but only " + std::to_string(devices) + " CUDA device(s) are visible");
  ScopedDevice on_device(m.device);
  FK_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  FK_CUBLAS_CHECK(cublasCreate(&m.blas));
  FK_CUBLAS_CHECK(cublasSetStream(m.blas, m.stream));
  // A fixed workspace: cuBLAS must not allocate while a decode step is being captured.
  m.blas_ws.grow(32u << 20, "gpt2 engine: cuBLAS workspace");
  FK_CUBLAS_CHECK(cublasSetWorkspace(m.blas, m.blas_ws.get(), m.blas_ws.bytes()));
  m.elem = dtype_size(dtype);

  const std::int64_t C = config.n_embd, V = config.vocab_size, P = config.n_positions;
  const float std0 = 0.02f;
  // GPT-2's init scales the residual projections by 1/sqrt(2 n_layer).
  const float std_proj = std0 / std::sqrt(2.f * float(config.n_layer));
  std::size_t off = 0;
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape, bool transpose, float mean, float sd) {
    TensorSlot s;
    s.offset = off;
    s.hf_shape = std::move(shape);
    s.transpose = transpose;
    s.init_mean = mean;
    s.init_std = sd;
    std::int64_t n = 1;
    for (auto d : s.hf_shape) n *= d;
    off += align_up(static_cast<std::size_t>(n) * m.elem);
    m.slots[name] = s;
  };
  add("wte.weight", {V, C}, false, 0.f, std0);
  add("wpe.weight", {P, C}, false, 0.f, std0);
  for (std::int64_t l = 0; l < config.n_layer; ++l) {
    add(m.L(l, "ln_1.weight"), {C}, false, 1.f, 0.f);
    add(m.L(l, "ln_1.bias"), {C}, false, 0.f, 0.f);
    add(m.L(l, "attn.c_attn.weight"), {C, 3 * C}, true, 0.f, std0);
    add(m.L(l, "attn.c_attn.bias"), {3 * C}, false, 0.f, 0.f);
    add(m.L(l, "attn.c_proj.weight"), {C, C}, true, 0.f, std_proj);
    add(m.L(l, "attn.c_proj.bias"), {C}, false, 0.f, 0.f);
    add(m.L(l, "ln_2.weight"), {C}, false, 1.f, 0.f);
    add(m.L(l, "ln_2.bias"), {C}, false, 0.f, 0.f);
    add(m.L(l, "mlp.c_fc.weight"), {C, 4 * C}, true, 0.f, std0);
    add(m.L(l, "mlp.c_fc.bias"), {4 * C}, false, 0.f, 0.f);
    add(m.L(l, "mlp.c_proj.weight"), {4 * C, C}, true, 0.f, std_proj);
    add(m.L(l, "mlp.c_proj.bias"), {C}, false, 0.f, 0.f);
  }
  add("ln_f.weight", {C}, false, 1.f, 0.f);
  add("ln_f.bias", {C}, false, 0.f, 0.f);
  m.weights.grow(off, "gpt2 engine: weights");
}

GPT2Engine::~GPT2Engine() = default;

int GPT2Engine::device() const { return impl_->device; }

std::map<std::string, std::vector<std::int64_t>> GPT2Engine::expected_tensors() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::map<std::string, std::vector<std::int64_t>> out;
  for (const auto& [name, s] : impl_->slots) out[name] = s.hf_shape;
  return out;
}

void GPT2Engine::init_random(std::uint64_t seed) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  ScopedDevice on_device(m.device);
  std::uint64_t id = 0;
  for (auto& [name, s] : m.slots) {
    std::int64_t n = 1;
    for (auto d : s.hf_shape) n *= d;
    // Stored layout differs from HF's only by a transpose; i.i.d. values make that irrelevant.
    fill_random(m.weights.as<char>(s.offset), dtype_, n, s.init_mean, s.init_std, seed, ++id, m.stream);
    s.loaded = true;
  }
  FK_CUDA_CHECK(cudaStreamSynchronize(m.stream));
}

void GPT2Engine::load_tensor(const std::string& raw_name, const void* data, DType src_dtype,
                             const std::vector<std::int64_t>& shape, bool on_device) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  std::string name = raw_name;
  if (name.rfind("transformer.", 0) == 0) name = name.substr(12);
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  // The causal-mask buffers of old checkpoints are not weights. The head is tied to wte: a
  // checkpoint that stores only lm_head.weight fills wte with it (the same tensor).
  if (ends_with(".attn.bias") || ends_with(".attn.masked_bias")) return;
  if (name == "lm_head.weight") {
    if (m.slots.at("wte.weight").loaded) return;
    name = "wte.weight";
  }
  auto it = m.slots.find(name);
  detail::require(it != m.slots.end(), kOp, "name", "'" + raw_name + "' is not a GPT-2 tensor");
  TensorSlot& s = it->second;
  auto fmt = [](const std::vector<std::int64_t>& v) {
    std::string r = "[";
    for (std::size_t i = 0; i < v.size(); ++i) r += (i ? ", " : "") + std::to_string(v[i]);
    return r + "]";
  };
  detail::require(shape == s.hf_shape, kOp, raw_name.c_str(),
                  "must have shape " + fmt(s.hf_shape) + ", got " + fmt(shape));
  detail::require(data != nullptr, kOp, raw_name.c_str(), "data must not be null");
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  ScopedDevice on_device_guard(m.device);
  if (on_device) check_device_pointer(data, m.device, raw_name);
  const void* src = data;
  if (!on_device) {
    m.staging.grow(static_cast<std::size_t>(n) * dtype_size(src_dtype), "gpt2 engine: weight staging");
    // Async on the engine's stream: a plain cudaMemcpy from pageable memory may return before its
    // DMA lands, and the non-blocking stream would not wait for it before the conversion reads.
    FK_CUDA_CHECK(cudaMemcpyAsync(m.staging.get(), data, static_cast<std::size_t>(n) * dtype_size(src_dtype),
                                  cudaMemcpyHostToDevice, m.stream));
    src = m.staging.get();
  }
  const std::int64_t rows = shape.size() == 2 ? shape[0] : 1;
  const std::int64_t cols = shape.size() == 2 ? shape[1] : shape[0];
  convert_weight(src, src_dtype, m.weights.as<char>(s.offset), dtype_, rows, cols, s.transpose, m.stream);
  FK_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  s.loaded = true;
}

void GPT2Engine::check_loaded() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->check_loaded();
}

std::size_t GPT2Engine::weight_bytes() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->weights.bytes();
}

std::size_t GPT2Engine::device_bytes() const {
  const Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  return m.weights.bytes() + m.blas_ws.bytes() + m.acts.bytes() + m.kv_pool.bytes() + m.paged_ws.bytes() +
         m.state.bytes() + m.staging.bytes();
}

namespace {

// extra_positions: max_new_tokens (generate) or 0; the caller has checked it is >= 0.
void check_prompts(const std::vector<std::vector<std::int32_t>>& prompts, const GPT2Config& cfg,
                   std::int64_t extra_positions) {
  detail::require(!prompts.empty(), kOp, "prompts", "must hold at least one sequence");
  // Token rows are indexed with int32 on the device (prefill's row table).
  std::int64_t total = 0;
  for (std::size_t s = 0; s < prompts.size(); ++s) {
    const std::string what = "prompts[" + std::to_string(s) + "]";
    const auto len = static_cast<std::int64_t>(prompts[s].size());
    detail::require(len > 0, kOp, "prompts", what + " is empty (a prompt needs at least one token)");
    // Compared as extra <= n_positions - len: len + extra overflows for extra near INT64_MAX.
    detail::require(len <= cfg.n_positions && extra_positions <= cfg.n_positions - len, kOp,
                    extra_positions > 0 ? "max_new_tokens" : "prompts",
                    "is too large: " + what + " has " + std::to_string(len) + " tokens, and with " +
                        std::to_string(extra_positions) + " new tokens it needs more than n_positions = " +
                        std::to_string(cfg.n_positions) + " positions");
    total += len;
    detail::require(total <= std::numeric_limits<std::int32_t>::max(), kOp, "prompts",
                    "hold more than 2^31 - 1 tokens in total");
    for (std::int32_t t : prompts[s]) {
      detail::require(t >= 0 && t < cfg.vocab_size, kOp, "prompts",
                      what + " holds token id " + std::to_string(t) + " outside [0, vocab_size = " +
                          std::to_string(cfg.vocab_size) + ")");
    }
  }
}

}  // namespace

void GPT2Engine::forward_logits(const std::vector<std::vector<std::int32_t>>& prompts, float* logits_out,
                                cudaStream_t caller_stream) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  check_prompts(prompts, config_, 0);
  m.check_loaded();
  detail::require(logits_out != nullptr, kOp, "logits", "must be a non-null device pointer");
  ScopedDevice on_device(m.device);
  std::int64_t T = 0, pages_needed = 0;
  for (const auto& p : prompts) {
    T += static_cast<std::int64_t>(p.size());
    pages_needed += detail::ceil_div(static_cast<std::int64_t>(p.size()), kPageSize);
  }
  m.ensure_acts(T);
  m.ensure_pool(pages_needed);
  // The engine computes on its own non-blocking stream, which does not wait implicitly for any
  // other stream, the legacy default (null) stream included: work the caller queued that still
  // uses `logits` (say, the previous owner of that memory) must finish before it is overwritten.
  FK_CUDA_CHECK(cudaStreamSynchronize(caller_stream));
  std::vector<std::int64_t> ids;
  std::vector<std::int64_t> offsets;
  try {
    for (const auto& p : prompts) {
      ids.push_back(m.pages->add_sequence());
      m.pages->reserve(ids.back(), static_cast<std::int64_t>(p.size()));
    }
    m.prefill(prompts, ids, &offsets);
    m.gemm(m.x, m.w("wte.weight"), logits_out, T, config_.vocab_size, config_.n_embd, true);
    FK_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  } catch (...) {
    for (auto id : ids) m.pages->free_sequence(id);
    throw;
  }
  for (auto id : ids) m.pages->free_sequence(id);
}

std::vector<std::vector<std::int32_t>> GPT2Engine::generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                                            const GenerationOptions& o, GenerationStats* stats) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  detail::require(o.max_new_tokens >= 1, kOp, "max_new_tokens", "must be >= 1, got " + std::to_string(o.max_new_tokens));
  check_prompts(prompts, config_, o.max_new_tokens);
  m.check_loaded();
  if (o.do_sample) {
    detail::require(o.temperature > 0.f && std::isfinite(o.temperature), kOp, "temperature",
                    "must be a finite value > 0, got " + std::to_string(o.temperature));
    detail::require(o.top_k >= 0, kOp, "top_k", "must be >= 0 (0: off), got " + std::to_string(o.top_k));
    detail::require(o.top_p > 0.f && o.top_p <= 1.f, kOp, "top_p", "must be in (0, 1], got " + std::to_string(o.top_p));
  }
  detail::require(o.eos_token_id < config_.vocab_size, kOp, "eos_token_id",
                  "must be < vocab_size or negative (none), got " + std::to_string(o.eos_token_id));
  ScopedDevice on_device(m.device);
  const auto t0 = std::chrono::steady_clock::now();
  const std::int64_t B = static_cast<std::int64_t>(prompts.size());
  std::int64_t T = 0, pages_needed = 0, longest = 0;
  for (const auto& p : prompts) {
    const std::int64_t len = static_cast<std::int64_t>(p.size());
    T += len;
    longest = std::max(longest, len);
    pages_needed += detail::ceil_div(len + o.max_new_tokens, kPageSize);
  }
  m.ensure_acts(T);
  m.ensure_state(B);
  m.ensure_pool(pages_needed);

  std::vector<std::int64_t> ids;
  auto free_all = [&] {
    for (auto id : ids) m.pages->free_sequence(id);
    ids.clear();
  };
  std::vector<std::vector<std::int32_t>> result(B, std::vector<std::int32_t>(o.max_new_tokens, 0));
  GenerationStats st;
  try {
    // Every sequence gets its pages for prompt + max_new_tokens now, so the page table the decode
    // graph reads never changes during generation.
    for (const auto& p : prompts) {
      ids.push_back(m.pages->add_sequence());
      m.pages->reserve(ids.back(), static_cast<std::int64_t>(p.size()) + o.max_new_tokens);
    }
    std::vector<std::int32_t> table(B * m.max_pages, 0), plen(B), last_pos(B), last_row(B);
    std::vector<std::int64_t> offsets;
    for (std::int64_t b = 0; b < B; ++b) {
      const auto& pg = m.pages->pages(ids[b]);
      std::copy(pg.begin(), pg.end(), table.begin() + b * m.max_pages);
      plen[b] = static_cast<std::int32_t>(prompts[b].size());
      last_pos[b] = plen[b] - 1;
    }
    SampleParams sp;
    sp.do_sample = o.do_sample ? 1 : 0;
    sp.temperature = o.temperature;
    sp.top_k = static_cast<std::int32_t>(std::min<std::int64_t>(o.top_k, config_.vocab_size));
    sp.top_p = o.top_p;
    sp.eos = o.eos_token_id < 0 ? -1 : static_cast<std::int32_t>(o.eos_token_id);  // any negative: none
    sp.max_new = static_cast<std::int32_t>(o.max_new_tokens);
    sp.seed = o.seed;
    const std::vector<std::int32_t> zeros(B, 0);
    FK_CUDA_CHECK(cudaMemcpyAsync(m.page_table, table.data(), table.size() * 4, cudaMemcpyHostToDevice, m.stream));
    FK_CUDA_CHECK(cudaMemcpyAsync(m.ds.prompt_lens, plen.data(), B * 4, cudaMemcpyHostToDevice, m.stream));
    FK_CUDA_CHECK(cudaMemcpyAsync(m.ds.positions, last_pos.data(), B * 4, cudaMemcpyHostToDevice, m.stream));
    FK_CUDA_CHECK(cudaMemcpyAsync(m.ds.finished, zeros.data(), B * 4, cudaMemcpyHostToDevice, m.stream));
    FK_CUDA_CHECK(cudaMemcpyAsync(m.params, &sp, sizeof(sp), cudaMemcpyHostToDevice, m.stream));

    // Prefill, then the first token from each prompt's last position.
    m.prefill(prompts, ids, &offsets);
    for (std::int64_t b = 0; b < B; ++b) last_row[b] = static_cast<std::int32_t>(offsets[b + 1] - 1);
    FK_CUDA_CHECK(cudaMemcpyAsync(m.rows_last, last_row.data(), B * 4, cudaMemcpyHostToDevice, m.stream));
    gather_rows(m.x, m.rows_last, m.xl, B, config_.n_embd, dtype_, m.stream);
    m.gemm(m.xl, m.w("wte.weight"), m.logits, B, config_.vocab_size, config_.n_embd, true);
    select_tokens(m.logits, B, config_.vocab_size, m.params, m.ds, m.stream);
    FK_CUDA_CHECK(cudaStreamSynchronize(m.stream));
    const auto t1 = std::chrono::steady_clock::now();
    st.prefill_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();

    // Decode: the step reads the longest sequence's length bound from the graph key.
    const std::int64_t max_len = longest + o.max_new_tokens - 1;
    const std::int64_t bucket =
        std::min(detail::ceil_div(max_len, kSeqBucket) * kSeqBucket, m.max_pages * kPageSize);
    std::vector<std::int32_t> fin(B);
    if (o.max_new_tokens > 1) {
      cudaGraphExec_t exec = m.decode_graph(B, bucket, &st.graph_captures);
      st.persistent_decode = m.graph_persistent[std::make_pair(B, bucket)];
      for (std::int64_t step = 1; step < o.max_new_tokens; ++step) {
        FK_CUDA_CHECK(cudaGraphLaunch(exec, m.stream));
        ++st.decode_steps;
        if (o.eos_token_id >= 0 && step % kFinishCheckEvery == 0) {
          FK_CUDA_CHECK(cudaMemcpyAsync(fin.data(), m.ds.finished, B * 4, cudaMemcpyDeviceToHost, m.stream));
          FK_CUDA_CHECK(cudaStreamSynchronize(m.stream));
          if (std::all_of(fin.begin(), fin.end(), [](std::int32_t f) { return f != 0; })) break;
        }
      }
    }
    std::vector<std::int32_t> out(B * m.ds.out_stride);
    FK_CUDA_CHECK(cudaMemcpyAsync(out.data(), m.ds.out_tokens, out.size() * 4, cudaMemcpyDeviceToHost, m.stream));
    FK_CUDA_CHECK(cudaMemcpyAsync(fin.data(), m.ds.finished, B * 4, cudaMemcpyDeviceToHost, m.stream));
    FK_CUDA_CHECK(cudaStreamSynchronize(m.stream));
    st.decode_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
    if (st.persistent_decode) {
      m.check_persistent_fault();
      if (st.decode_steps > 0) m.write_persistent_trace(st.decode_ms * 1e3 / double(st.decode_steps));
    }
    const std::int64_t produced = 1 + st.decode_steps;
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t i = 0; i < o.max_new_tokens; ++i) {
        // Steps skipped after every sequence finished are EOS padding.
        result[b][i] = i < produced ? out[b * m.ds.out_stride + i] : sp.eos;
      }
    }
  } catch (...) {
    free_all();
    throw;
  }
  free_all();
  if (stats) *stats = st;
  return result;
}

}  // namespace flashkernel::models
