// GPT2Engine: the engine's buffers (activations, decode state, KV pool), the layer stack, packed
// prefill, forward_logits and the generate loop. Weights: engine_weights.cu; decode step and its
// CUDA graphs: engine_decode.cu; GPT2Engine::Impl: engine_impl.h.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "common/arg_check.h"
#include "common/launch.h"
#include "flashkernel/attention.h"
#include "flashkernel/gelu_linear.h"
#include "flashkernel/layernorm.h"
#include "models/gpt2/engine_impl.h"

namespace flashkernel::models {

namespace {

// Decode graphs are keyed by a max sequence length rounded up to this, so batches of similar
// length share one capture (a larger bound only adds idle split-KV blocks).
constexpr std::int64_t kSeqBucket = 64;
// All-finished checks happen every this many decode steps: one host sync per 8 tokens.
constexpr std::int64_t kFinishCheckEvery = 8;

cudaDataType_t cuda_type(DType d) {
  return d == DType::kFloat16 ? CUDA_R_16F : (d == DType::kBFloat16 ? CUDA_R_16BF : CUDA_R_32F);
}

}  // namespace

GPT2Engine::Impl::Impl(const GPT2Config& c, DType d, int dev) : cfg(c), dtype(d), device(dev) {
  kv_dtype = d;
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
  if (const char* k = std::getenv("FLASHKERNEL_GPT2_PERSISTENT_DROP_COPY")) persistent_drop_copy = std::atoi(k);
  if (const char* t = std::getenv("FLASHKERNEL_GPT2_PERSISTENT_TRACE")) persistent_trace_path = t;
}

GPT2Engine::Impl::~Impl() {
  clear_graphs();
  if (blas) cublasDestroy(blas);
  if (stream) detail::discard_cuda_error(cudaStreamDestroy(stream));
  // The DeviceAllocation members free themselves.
}

void GPT2Engine::Impl::drop_acts() {
  clear_graphs();
  act_rows = 0;
  h = x = qkv = q = k = v = att = y = a = xl = nullptr;
  tok = pos = rows_last = nullptr;
  kv_slots = nullptr;
}

void GPT2Engine::Impl::drop_state() {
  clear_graphs();
  state_batch = 0;
  ds = DecodeState{};
  page_table = seq_lens = nullptr;
  dec_slots = nullptr;
  params = nullptr;
  logits = nullptr;
}

void GPT2Engine::Impl::drop_pool() {
  clear_graphs();
  pages.reset();
  layout = KVCacheLayout{};
}

void GPT2Engine::Impl::gemm(const void* in, const void* weight, void* out, std::int64_t m, std::int64_t n,
                            std::int64_t k, bool out_f32) {
  if (m == 0) return;
  const float alpha = 1.f, beta = 0.f;
  // Row-major out[m, n] = in[m, k] @ weight[n, k]^T is column-major out^T = weight^T(op T) * in^T.
  FK_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                               static_cast<int>(k), &alpha, weight, cuda_type(dtype), static_cast<int>(k), in,
                               cuda_type(dtype), static_cast<int>(k), &beta, out,
                               out_f32 ? CUDA_R_32F : cuda_type(dtype), static_cast<int>(n), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
}

void GPT2Engine::Impl::ensure_acts(std::int64_t rows) {
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

void GPT2Engine::Impl::ensure_state(std::int64_t batch) {
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

void GPT2Engine::Impl::ensure_pool(std::int64_t num_pages) {
  if (pages && pages->num_pages() >= num_pages) return;
  KVCacheLayout grown;
  grown.num_layers = cfg.n_layer;
  grown.num_pages = std::max<std::int64_t>(num_pages, pages ? pages->num_pages() : 0);
  grown.page_size = kPageSize;
  grown.num_kv_heads = cfg.n_head;
  grown.head_dim = cfg.head_dim();
  grown.dtype = kv_dtype;
  grown.activation_dtype = dtype;
  validate_kv_layout(grown, kOp);
  if (kv_dtype == DType::kFloat8E4M3 && kv_scales.get() == nullptr) {
    const std::vector<float> ones(static_cast<std::size_t>(2 * cfg.n_layer * cfg.n_head), 1.f);
    kv_scales.grow(ones.size() * sizeof(float), "gpt2 engine: KV cache scales");
    FK_CUDA_CHECK(cudaMemcpy(kv_scales.get(), ones.data(), ones.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  drop_pool();
  kv_pool.grow(grown.bytes(), "gpt2 engine: KV cache pool");
  pages = std::make_unique<KVPageAllocator>(grown.num_pages, kPageSize, cfg.n_layer);
  layout = grown;
}

void GPT2Engine::Impl::layers(std::int64_t rows, const std::int64_t* slots_dev,
                              const std::vector<std::int64_t>* seq_offsets, std::int64_t decode_max_seq_len) {
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
    kv_cache_append(kv_pool.get(), layout, l, slots_dev, rows, k, v, stream, nullptr, cache_scales());
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
      PagedDecodeArgs pa = paged_decode_args(rows, decode_max_seq_len);
      pa.layer = l;
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

void GPT2Engine::Impl::prefill(const std::vector<std::vector<std::int32_t>>& prompts,
                               const std::vector<std::int64_t>& seq_ids, std::vector<std::int64_t>* offsets_out) {
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

// ------------------------------------------------------------------------------ GPT2Engine

int GPT2Engine::device() const { return impl_->device; }

void GPT2Engine::set_kv_dtype(DType kv_dtype) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  detail::require(kv_dtype == dtype_ || kv_dtype == DType::kFloat8E4M3, kOp, "kv_dtype",
                  std::string("must be the engine's dtype (") + dtype_name(dtype_) + ") or float8_e4m3fn, got " +
                      dtype_name(kv_dtype));
  if (kv_dtype == m.kv_dtype) return;
  ScopedDevice on_device(m.device);
  // Said here rather than at the first decode step: only the sm_80 ring kernel reads FP8 pages.
  detail::require(kv_dtype != DType::kFloat8E4M3 || detail::current_compute_major() >= 8, kOp, "kv_dtype",
                  "float8_e4m3fn needs compute capability 8.0 or newer (paged decode over FP8 pages)");
  m.drop_pool();  // its pages hold the old element type (and drops the graphs that read them)
  m.kv_pool.reset();  // sized for the old element type
  m.kv_dtype = kv_dtype;
}

DType GPT2Engine::kv_dtype() const {
  const Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  return m.kv_dtype;
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

    // Streaming: token `index` of every row is one column of out_tokens ([B, out_stride]), read with
    // one strided copy. Without on_tokens this is never called, so the default path keeps its
    // single read at the end.
    std::vector<std::int32_t> step_tokens(o.on_tokens ? B : 0);
    auto report_step = [&](std::int64_t index) {
      FK_CUDA_CHECK(cudaMemcpy2DAsync(step_tokens.data(), sizeof(std::int32_t), m.ds.out_tokens + index,
                                      m.ds.out_stride * sizeof(std::int32_t), sizeof(std::int32_t), B,
                                      cudaMemcpyDeviceToHost, m.stream));
      FK_CUDA_CHECK(cudaStreamSynchronize(m.stream));
      // A persistent step that tripped its watchdog wrote invalid tokens: fail before handing them out.
      if (st.persistent_decode) m.check_persistent_fault();
      o.on_tokens(index, step_tokens);
    };
    if (o.on_tokens) report_step(0);

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
        if (o.on_tokens) report_step(step);
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
    if (o.on_tokens) {
      // Every row finished early: the remaining columns are the EOS padding of `result`.
      const std::vector<std::int32_t> padding(B, sp.eos);
      for (std::int64_t i = produced; i < o.max_new_tokens; ++i) o.on_tokens(i, padding);
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
