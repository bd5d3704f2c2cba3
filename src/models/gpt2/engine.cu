// GPT2Engine: the engine's buffers (activations, decode state, KV pool), the layer stack, packed
// prefill, forward_logits and the generate loop. Weights: engine_weights.cu; decode step and its
// CUDA graphs: engine_decode.cu; GPT2Engine::Impl: engine_impl.h.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <utility>

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
  if (const char* mode = std::getenv("FLASHKERNEL_GPT2_DECODE"); mode != nullptr && *mode != '\0') {
    decode_path = decode_path_from_name(mode, "FLASHKERNEL_GPT2_DECODE");
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
  // Open sequences whose K/V must survive the growth, with their pages in the old pool.
  std::vector<std::pair<OpenSequence*, std::vector<std::int32_t>>> live;
  for (auto& [id, s] : open_seqs) {
    if (s.alloc_id >= 0 && pages) live.emplace_back(&s, pages->pages(s.alloc_id));
  }
  KVCacheLayout grown;
  grown.num_layers = cfg.n_layer;
  grown.num_pages = std::max<std::int64_t>(num_pages, pages ? pages->num_pages() : 0);
  // With conversations held open the pool grows by half at least, so that a growing history
  // does not copy the whole pool at every turn.
  if (!live.empty()) grown.num_pages = std::max<std::int64_t>(grown.num_pages, pages->num_pages() * 3 / 2);
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
  if (live.empty()) {
    drop_pool();
    kv_pool.grow(grown.bytes(), "gpt2 engine: KV cache pool");
    pages = std::make_unique<KVPageAllocator>(grown.num_pages, kPageSize, cfg.n_layer);
    layout = grown;
    return;
  }
  // Carry the open sequences over: new pages in a new pool, each page copied for every layer (a
  // page's K and V of one layer are one contiguous block; layers are num_pages pages apart). The
  // old pool and allocator stay untouched until the copies have finished, so any failure leaves
  // the engine as it was.
  clear_graphs();
  detail::DeviceAllocation new_pool;
  new_pool.grow(grown.bytes(), "gpt2 engine: KV cache pool");
  auto new_pages = std::make_unique<KVPageAllocator>(grown.num_pages, kPageSize, cfg.n_layer);
  const std::size_t page_bytes = static_cast<std::size_t>(layout.page_elems()) * dtype_size(layout.dtype);
  std::vector<std::int64_t> new_ids;
  for (const auto& [seq, old_list] : live) {
    const std::int64_t id = new_pages->add_sequence();
    new_pages->reserve(id, static_cast<std::int64_t>(old_list.size()) * kPageSize);
    const auto new_list = new_pages->pages(id);
    for (std::size_t i = 0; i < old_list.size(); ++i) {
      FK_CUDA_CHECK(cudaMemcpy2DAsync(new_pool.as<char>(new_list[i] * page_bytes), grown.num_pages * page_bytes,
                                      kv_pool.as<char>(old_list[i] * page_bytes), layout.num_pages * page_bytes,
                                      page_bytes, static_cast<std::size_t>(cfg.n_layer), cudaMemcpyDeviceToDevice,
                                      stream));
    }
    new_ids.push_back(id);
  }
  FK_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (std::size_t i = 0; i < live.size(); ++i) live[i].first->alloc_id = new_ids[i];
  kv_pool = std::move(new_pool);
  pages = std::move(new_pages);
  layout = grown;
}

void GPT2Engine::Impl::ensure_context() {
  context_kv.grow(2 * static_cast<std::size_t>(cfg.n_positions * cfg.n_embd) * elem, "gpt2 engine: prefix K/V");
}

void GPT2Engine::Impl::layers(std::int64_t rows, const std::int64_t* slots_dev,
                              const std::vector<PrefillPiece>* pieces, std::int64_t decode_max_seq_len) {
  const std::int64_t C = cfg.n_embd, H = cfg.n_head, D = cfg.head_dim();
  const float eps = cfg.layer_norm_epsilon;
  const float scale = 1.f / std::sqrt(float(D));
  add_layernorm(h, nullptr, nullptr, w(L(0, "ln_1.weight")), w(L(0, "ln_1.bias")), x, nullptr, rows, C, eps, dtype,
                stream);
  for (std::int64_t l = 0; l < cfg.n_layer; ++l) {
    const bool gemv = pieces == nullptr && use_decode_gemv && decode_gemv_supported(rows, 4 * C);
    if (gemv) {
      decode_gemv(x, w(L(l, "attn.c_attn.weight")), w(L(l, "attn.c_attn.bias")), nullptr, rows, 3 * C, C, dtype, q,
                  k, v, C, stream);
    } else {
      gemm(x, w(L(l, "attn.c_attn.weight")), qkv, rows, 3 * C, C, false);
      split_qkv(qkv, w(L(l, "attn.c_attn.bias")), q, k, v, rows, C, dtype, stream);
    }
    kv_cache_append(kv_pool.get(), layout, l, slots_dev, rows, k, v, stream, nullptr, cache_scales());
    if (pieces != nullptr) {
      for (const PrefillPiece& pc : *pieces) {
        const std::int64_t len = pc.start + pc.count;  // keys: the cached prefix, then the piece
        AttentionShape sh;
        sh.batch = 1;
        sh.heads_q = sh.heads_kv = H;
        sh.seq_q = pc.count;
        sh.seq_k = len;
        sh.head_dim = D;
        // {batch, head, token} strides; one sequence, so the batch stride is never stepped.
        for (auto* st : {sh.q_stride, sh.k_stride, sh.v_stride, sh.o_stride}) {
          st[0] = pc.count * C;
          st[1] = D;
          st[2] = C;
        }
        const std::size_t bo = pc.row * C * elem;
        const void* kk = static_cast<char*>(k) + bo;
        const void* vv = static_cast<char*>(v) + bo;
        if (pc.start > 0) {
          // The piece's own K/V were appended above: gather prefix + piece, [H, len, D] each.
          void* ck = context_kv.get();
          void* cv = context_kv.as<char>(static_cast<std::size_t>(cfg.n_positions * C) * elem);
          kv_cache_gather(kv_pool.get(), layout, l, pc.pages_dev, len, ck, cv, stream, nullptr, cache_scales());
          for (auto* st : {sh.k_stride, sh.v_stride}) {
            st[0] = H * len * D;
            st[1] = len * D;
            st[2] = D;
          }
          kk = ck;
          vv = cv;
        }
        flash_attention(static_cast<char*>(q) + bo, kk, vv, static_cast<char*>(att) + bo, nullptr, sh, dtype,
                        /*causal=*/true, scale, stream);
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

bool GPT2Engine::Impl::fused_decode_supported(std::int64_t rows) const {
  const bool wanted = decode_path == DecodePath::kFused ||
                      (decode_path == DecodePath::kAuto && rows <= kAutoFusedMaxBatch && detail::current_compute_major() >= 9);
  return wanted && use_decode_gemv && kv_dtype != DType::kFloat8E4M3 &&
         decode_gemv_supported(rows, 4 * cfg.n_embd) && fused_gemv_supported(rows, cfg.n_embd);
}

void GPT2Engine::Impl::fused_decode_layers(std::int64_t rows, std::int64_t max_seq_len) {
  const std::int64_t C = cfg.n_embd;
  const float eps = cfg.layer_norm_epsilon;
  auto gemv = [&](const void* in, bool normalize, const std::string& weight, const std::string& ln, GemvOut kind,
                  void* out, std::int64_t n, std::int64_t k) {
    FusedGemv g = projection(w(weight + ".weight"), w(weight + ".bias"), rows, n, k, dtype, kind, out);
    (normalize ? g.norm_in : g.x) = in;
    if (normalize) {
      g.gamma = w(ln + ".weight");
      g.beta = w(ln + ".bias");
      g.eps = eps;
    }
    return g;
  };
  for (std::int64_t l = 0; l < cfg.n_layer; ++l) {
    // h holds the residual stream (the embedding before layer 0).
    FusedGemv qkv = gemv(h, true, L(l, "attn.c_attn"), L(l, "ln_1"), GemvOut::kQkv, nullptr, 3 * C, C);
    qkv.q = q;
    qkv.split = C;
    qkv.pool = static_cast<char*>(kv_pool.get()) + l * layout.layer_elems() * std::int64_t(elem);
    qkv.num_slots = layout.num_pages * layout.page_size;
    qkv.page_size = layout.page_size;
    qkv.page_elems = layout.page_elems();
    qkv.heads = layout.num_kv_heads;
    qkv.head_dim = layout.head_dim;
    qkv.slots = dec_slots;
    fused_gemv(qkv, stream);
    PagedDecodeArgs pa = paged_decode_args(rows, max_seq_len);
    pa.layer = l;
    pa.scale = 1.f / std::sqrt(float(cfg.head_dim()));
    pa.workspace = paged_ws.get();
    pa.workspace_bytes = paged_ws.bytes();
    paged_decode_attention(pa, stream);
    fused_gemv(gemv(att, false, L(l, "attn.c_proj"), "", GemvOut::kAddTo, h, C, C), stream);
    fused_gemv(gemv(h, true, L(l, "mlp.c_fc"), L(l, "ln_2"), GemvOut::kGeluTanh, a, 4 * C, C), stream);
    fused_gemv(gemv(a, false, L(l, "mlp.c_proj"), "", GemvOut::kAddTo, h, C, 4 * C), stream);
  }
  add_layernorm(h, nullptr, nullptr, w("ln_f.weight"), w("ln_f.bias"), x, nullptr, rows, C, eps, dtype, stream);
}

void GPT2Engine::Impl::prefill(std::vector<PrefillPiece>& pieces) {
  std::vector<std::int32_t> htok, hpos;
  std::vector<std::int64_t> hslots;
  for (PrefillPiece& pc : pieces) {
    pc.row = static_cast<std::int64_t>(htok.size());
    const auto pg = pages->pages(pc.seq);
    for (std::int64_t i = 0; i < pc.count; ++i) {
      const std::int64_t p = pc.start + i;
      htok.push_back(pc.tokens[i]);
      hpos.push_back(static_cast<std::int32_t>(p));
      hslots.push_back(std::int64_t(pg[p / kPageSize]) * kPageSize + p % kPageSize);
    }
  }
  const std::int64_t T = static_cast<std::int64_t>(htok.size());
  FK_CUDA_CHECK(cudaMemcpyAsync(tok, htok.data(), T * 4, cudaMemcpyHostToDevice, stream));
  FK_CUDA_CHECK(cudaMemcpyAsync(pos, hpos.data(), T * 4, cudaMemcpyHostToDevice, stream));
  FK_CUDA_CHECK(cudaMemcpyAsync(kv_slots, hslots.data(), T * 8, cudaMemcpyHostToDevice, stream));
  embed(w("wte.weight"), w("wpe.weight"), tok, pos, h, T, cfg.n_embd, dtype, nullptr, 0, kPageSize, nullptr, nullptr,
        stream);
  layers(T, kv_slots, &pieces, 0);
  // The host vectors must outlive the async copies.
  FK_CUDA_CHECK(cudaStreamSynchronize(stream));
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
  for (const auto& [id, s] : m.open_seqs) {
    detail::require(s.length() == 0, kOp, "kv_dtype",
                    "cannot change while open sequence " + std::to_string(id) +
                        " holds a history (its K/V are cached in the old type): close it first");
  }
  m.drop_pool();  // its pages hold the old element type (and drops the graphs that read them)
  m.kv_pool.reset();  // sized for the old element type
  for (auto& [id, s] : m.open_seqs) s.alloc_id = -1;  // their (empty) page lists went with the pool
  m.kv_dtype = kv_dtype;
}

namespace {
constexpr std::pair<const char*, DecodePath> kDecodePathNames[] = {{"auto", DecodePath::kAuto},
                                                                     {"graph", DecodePath::kGraph},
                                                                     {"pdl", DecodePath::kPdl},
                                                                     {"fused", DecodePath::kFused},
                                                                     {"persistent", DecodePath::kPersistent}};
}  // namespace

DecodePath decode_path_from_name(const std::string& name, const char* argument) {
  for (const auto& [n, path] : kDecodePathNames) {
    if (name == n) return path;
  }
  throw ArgumentError(kOp, argument, "must be 'auto', 'graph', 'pdl', 'fused' or 'persistent', got '" + name + "'");
}

const char* decode_path_name(DecodePath path) {
  for (const auto& [n, p] : kDecodePathNames) {
    if (p == path) return n;
  }
  return "unknown";
}

void GPT2Engine::set_decode_path(DecodePath path) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  const int value = static_cast<int>(path);
  detail::require(value >= 0 && value <= static_cast<int>(DecodePath::kPersistent), kOp, "path",
                  "must be a DecodePath value, got " + std::to_string(value));
  if (path == m.decode_path) return;
  ScopedDevice on_device(m.device);
  m.clear_graphs();  // captured on the old path
  m.decode_path = path;
}

DecodePath GPT2Engine::decode_path() const {
  const Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  return m.decode_path;
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
         m.state.bytes() + m.staging.bytes() + m.context_kv.bytes();
}

namespace {

// Every id of `row` (named `what`, e.g. "prompts[2]") in [0, vocab_size); ArgumentError naming `argument`.
void check_token_ids(const std::vector<std::int32_t>& row, const GPT2Config& cfg, const char* argument,
                     const std::string& what) {
  for (std::int32_t t : row) {
    detail::require(t >= 0 && t < cfg.vocab_size, kOp, argument,
                    what + " holds token id " + std::to_string(t) + " outside [0, vocab_size = " +
                        std::to_string(cfg.vocab_size) + ")");
  }
}

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
    check_token_ids(prompts[s], cfg, "prompts", what);
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
  m.ensure_pool(m.pages_in_use() + pages_needed);
  // The engine computes on its own non-blocking stream, which does not wait implicitly for any
  // other stream, the legacy default (null) stream included: work the caller queued that still
  // uses `logits` (say, the previous owner of that memory) must finish before it is overwritten.
  FK_CUDA_CHECK(cudaStreamSynchronize(caller_stream));
  std::vector<std::int64_t> ids;
  try {
    std::vector<PrefillPiece> pieces;
    for (const auto& p : prompts) {
      ids.push_back(m.pages->add_sequence());
      m.pages->reserve(ids.back(), static_cast<std::int64_t>(p.size()));
      PrefillPiece pc;
      pc.seq = ids.back();
      pc.tokens = p.data();
      pc.count = static_cast<std::int64_t>(p.size());
      pieces.push_back(pc);
    }
    m.prefill(pieces);
    m.gemm(m.x, m.w("wte.weight"), logits_out, T, config_.vocab_size, config_.n_embd, true);
    FK_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  } catch (...) {
    for (auto id : ids) m.pages->free_sequence(id);
    throw;
  }
  for (auto id : ids) m.pages->free_sequence(id);
}

namespace {

// The checks generate() and generate_continue() share (ArgumentError naming the option).
void check_options(const GenerationOptions& o, const GPT2Config& cfg) {
  detail::require(o.max_new_tokens >= 1, kOp, "max_new_tokens", "must be >= 1, got " + std::to_string(o.max_new_tokens));
  if (o.do_sample) {
    detail::require(o.temperature > 0.f && std::isfinite(o.temperature), kOp, "temperature",
                    "must be a finite value > 0, got " + std::to_string(o.temperature));
    detail::require(o.top_k >= 0, kOp, "top_k", "must be >= 0 (0: off), got " + std::to_string(o.top_k));
    detail::require(o.top_p > 0.f && o.top_p <= 1.f, kOp, "top_p", "must be in (0, 1], got " + std::to_string(o.top_p));
  }
  detail::require(o.eos_token_id < cfg.vocab_size, kOp, "eos_token_id",
                  "must be < vocab_size or negative (none), got " + std::to_string(o.eos_token_id));
  detail::require(o.prefill_chunk >= 0, kOp, "prefill_chunk",
                  "must be >= 0 (0: whole prompts), got " + std::to_string(o.prefill_chunk));
}

}  // namespace

void GPT2Engine::Impl::generate_tokens(const std::vector<GenerationInput>& in, const GenerationOptions& o,
                                       std::vector<std::vector<std::int32_t>>* result,
                                       std::vector<std::int64_t>* produced, GenerationStats* stats) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::int64_t B = static_cast<std::int64_t>(in.size());
  std::int64_t longest_input = 0, longest = 0;
  for (const auto& g : in) {
    longest_input = std::max<std::int64_t>(longest_input, static_cast<std::int64_t>(g.tokens.size()));
    longest = std::max<std::int64_t>(longest, g.start + static_cast<std::int64_t>(g.tokens.size()));
  }
  // Prefill rounds: round r holds tokens [r * chunk, (r + 1) * chunk) of every input; the first
  // round is the largest, so it sizes the activations.
  const std::int64_t chunk = o.prefill_chunk > 0 ? std::min(o.prefill_chunk, longest_input) : longest_input;
  std::vector<std::vector<PrefillPiece>> rounds;
  std::vector<std::int32_t> last_row(B);
  std::vector<std::int64_t> last_round(B);
  std::int64_t first_round_rows = 0;
  for (std::int64_t done = 0; done < longest_input; done += chunk) {
    std::vector<PrefillPiece> round;
    std::int64_t row = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t n = static_cast<std::int64_t>(in[b].tokens.size());
      if (done >= n) continue;
      PrefillPiece pc;
      pc.seq = in[b].seq;
      pc.start = in[b].start + done;
      pc.tokens = in[b].tokens.data() + done;
      pc.count = std::min(chunk, n - done);
      pc.pages_dev = page_table + b * max_pages;
      if (done + pc.count == n) {
        last_row[b] = static_cast<std::int32_t>(row + pc.count - 1);
        last_round[b] = static_cast<std::int64_t>(rounds.size());
      }
      row += pc.count;
      round.push_back(pc);
    }
    if (rounds.empty()) first_round_rows = row;
    rounds.push_back(std::move(round));
  }
  ensure_acts(first_round_rows);
  // A piece that starts past position 0 (a continued history, or a prompt's second chunk) attends
  // to gathered prefix K/V.
  if (longest > longest_input || rounds.size() > 1) ensure_context();

  std::vector<std::int32_t> table(B * max_pages, 0), plen(B), last_pos(B);
  for (std::int64_t b = 0; b < B; ++b) {
    const auto pg = pages->pages(in[b].seq);
    std::copy(pg.begin(), pg.end(), table.begin() + b * max_pages);
    plen[b] = static_cast<std::int32_t>(in[b].start + static_cast<std::int64_t>(in[b].tokens.size()));
    last_pos[b] = plen[b] - 1;
  }
  SampleParams sp;
  sp.do_sample = o.do_sample ? 1 : 0;
  sp.temperature = o.temperature;
  sp.top_k = static_cast<std::int32_t>(std::min<std::int64_t>(o.top_k, cfg.vocab_size));
  sp.top_p = o.top_p;
  sp.eos = o.eos_token_id < 0 ? -1 : static_cast<std::int32_t>(o.eos_token_id);  // any negative: none
  sp.max_new = static_cast<std::int32_t>(o.max_new_tokens);
  sp.seed = o.seed;
  const std::vector<std::int32_t> zeros(B, 0);
  FK_CUDA_CHECK(cudaMemcpyAsync(page_table, table.data(), table.size() * 4, cudaMemcpyHostToDevice, stream));
  FK_CUDA_CHECK(cudaMemcpyAsync(ds.prompt_lens, plen.data(), B * 4, cudaMemcpyHostToDevice, stream));
  FK_CUDA_CHECK(cudaMemcpyAsync(ds.positions, last_pos.data(), B * 4, cudaMemcpyHostToDevice, stream));
  FK_CUDA_CHECK(cudaMemcpyAsync(ds.finished, zeros.data(), B * 4, cudaMemcpyHostToDevice, stream));
  FK_CUDA_CHECK(cudaMemcpyAsync(params, &sp, sizeof(sp), cudaMemcpyHostToDevice, stream));
  FK_CUDA_CHECK(cudaMemcpyAsync(rows_last, last_row.data(), B * 4, cudaMemcpyHostToDevice, stream));

  // Prefill, keeping ln_f(h) of each input's last token (row b of xl) as its round passes; then
  // the first token from those rows.
  const std::size_t row_bytes = static_cast<std::size_t>(cfg.n_embd) * elem;
  for (std::size_t r = 0; r < rounds.size(); ++r) {
    prefill(rounds[r]);
    std::vector<std::int64_t> ending;
    for (std::int64_t b = 0; b < B; ++b) {
      if (last_round[b] == static_cast<std::int64_t>(r)) ending.push_back(b);
    }
    if (static_cast<std::int64_t>(ending.size()) == B) {
      gather_rows(x, rows_last, xl, B, cfg.n_embd, dtype, stream);
    } else {
      for (std::int64_t b : ending) {
        gather_rows(x, rows_last + b, static_cast<char*>(xl) + b * row_bytes, 1, cfg.n_embd, dtype, stream);
      }
    }
  }
  gemm(xl, w("wte.weight"), logits, B, cfg.vocab_size, cfg.n_embd, true);
  select_tokens(logits, B, cfg.vocab_size, params, ds, stream);
  FK_CUDA_CHECK(cudaStreamSynchronize(stream));
  const auto t1 = std::chrono::steady_clock::now();
  GenerationStats st;
  st.prefill_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();

  // Streaming: token `index` of every row is one column of out_tokens ([B, out_stride]), read with
  // one strided copy. Without on_tokens this is never called, so the default path keeps its
  // single read at the end.
  std::vector<std::int32_t> step_tokens(o.on_tokens ? B : 0);
  auto report_step = [&](std::int64_t index) {
    FK_CUDA_CHECK(cudaMemcpy2DAsync(step_tokens.data(), sizeof(std::int32_t), ds.out_tokens + index,
                                    ds.out_stride * sizeof(std::int32_t), sizeof(std::int32_t), B,
                                    cudaMemcpyDeviceToHost, stream));
    FK_CUDA_CHECK(cudaStreamSynchronize(stream));
    // A persistent step that tripped its watchdog wrote invalid tokens: fail before handing them out.
    if (st.persistent_decode) check_persistent_fault();
    o.on_tokens(index, step_tokens);
  };
  if (o.on_tokens) report_step(0);

  // Decode: the step reads the longest sequence's length bound from the graph key.
  const std::int64_t max_len = longest + o.max_new_tokens - 1;
  const std::int64_t bucket = std::min(detail::ceil_div(max_len, kSeqBucket) * kSeqBucket, max_pages * kPageSize);
  std::vector<std::int32_t> fin(B);
  if (o.max_new_tokens > 1) {
    cudaGraphExec_t exec = decode_graph(B, bucket, &st.graph_captures);
    st.persistent_decode = graph_persistent[std::make_pair(B, bucket)];
    st.fused_decode = !st.persistent_decode && fused_decode_supported(B);
    for (std::int64_t step = 1; step < o.max_new_tokens; ++step) {
      FK_CUDA_CHECK(cudaGraphLaunch(exec, stream));
      ++st.decode_steps;
      if (o.on_tokens) report_step(step);
      if (o.eos_token_id >= 0 && step % kFinishCheckEvery == 0) {
        FK_CUDA_CHECK(cudaMemcpyAsync(fin.data(), ds.finished, B * 4, cudaMemcpyDeviceToHost, stream));
        FK_CUDA_CHECK(cudaStreamSynchronize(stream));
        if (std::all_of(fin.begin(), fin.end(), [](std::int32_t f) { return f != 0; })) break;
      }
    }
  }
  std::vector<std::int32_t> out(B * ds.out_stride);
  FK_CUDA_CHECK(cudaMemcpyAsync(out.data(), ds.out_tokens, out.size() * 4, cudaMemcpyDeviceToHost, stream));
  FK_CUDA_CHECK(cudaMemcpyAsync(fin.data(), ds.finished, B * 4, cudaMemcpyDeviceToHost, stream));
  FK_CUDA_CHECK(cudaStreamSynchronize(stream));
  st.decode_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t1).count();
  if (st.persistent_decode) {
    check_persistent_fault();
    if (st.decode_steps > 0) write_persistent_trace(st.decode_ms * 1e3 / double(st.decode_steps));
  }
  const std::int64_t columns = 1 + st.decode_steps;
  result->assign(B, std::vector<std::int32_t>(o.max_new_tokens, 0));
  produced->assign(B, o.max_new_tokens);
  for (std::int64_t b = 0; b < B; ++b) {
    auto& row = (*result)[b];
    for (std::int64_t i = 0; i < o.max_new_tokens; ++i) {
      // Steps skipped after every sequence finished are EOS padding.
      row[i] = i < columns ? out[b * ds.out_stride + i] : sp.eos;
    }
    if (sp.eos >= 0) {
      const auto eos = std::find(row.begin(), row.end(), sp.eos);
      if (eos != row.end()) (*produced)[b] = (eos - row.begin()) + 1;
    }
  }
  if (o.on_tokens) {
    // Every row finished early: the remaining columns are the EOS padding of `result`.
    const std::vector<std::int32_t> padding(B, sp.eos);
    for (std::int64_t i = columns; i < o.max_new_tokens; ++i) o.on_tokens(i, padding);
  }
  if (stats) *stats = st;
}

std::vector<std::vector<std::int32_t>> GPT2Engine::generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                                            const GenerationOptions& o, GenerationStats* stats) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  check_options(o, config_);
  check_prompts(prompts, config_, o.max_new_tokens);
  m.check_loaded();
  ScopedDevice on_device(m.device);
  const std::int64_t B = static_cast<std::int64_t>(prompts.size());
  std::int64_t pages_needed = 0;
  for (const auto& p : prompts) {
    pages_needed += detail::ceil_div(static_cast<std::int64_t>(p.size()) + o.max_new_tokens, kPageSize);
  }
  m.ensure_state(B);
  m.ensure_pool(m.pages_in_use() + pages_needed);

  std::vector<GenerationInput> inputs;
  auto free_all = [&] {
    for (const auto& g : inputs) m.pages->free_sequence(g.seq);
    inputs.clear();
  };
  std::vector<std::vector<std::int32_t>> result;
  std::vector<std::int64_t> produced;
  try {
    // Every sequence gets its pages for prompt + max_new_tokens now, so the page table the decode
    // graph reads never changes during generation.
    for (const auto& p : prompts) {
      GenerationInput g;
      g.seq = m.pages->add_sequence();
      g.tokens = p;
      inputs.push_back(std::move(g));
      m.pages->reserve(inputs.back().seq, static_cast<std::int64_t>(p.size()) + o.max_new_tokens);
    }
    m.generate_tokens(inputs, o, &result, &produced, stats);
  } catch (...) {
    free_all();
    throw;
  }
  free_all();
  return result;
}

// ------------------------------------------------------------------------------ multi-turn

std::int64_t GPT2Engine::open_sequence() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  const std::int64_t id = m.next_open_id++;
  m.open_seqs[id] = OpenSequence{};
  return id;
}

namespace {

OpenSequence& open_sequence_of(std::map<std::int64_t, OpenSequence>& open, std::int64_t id, const std::string& what) {
  auto it = open.find(id);
  detail::require(it != open.end(), kOp, "sequence", what + " = " + std::to_string(id) + " is not an open sequence");
  return it->second;
}

}  // namespace

void GPT2Engine::close_sequence(std::int64_t sequence) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  OpenSequence& s = open_sequence_of(m.open_seqs, sequence, "sequence");
  if (s.alloc_id >= 0) m.pages->free_sequence(s.alloc_id);
  m.open_seqs.erase(sequence);
}

std::int64_t GPT2Engine::sequence_length(std::int64_t sequence) const {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  return open_sequence_of(m.open_seqs, sequence, "sequence").length();
}

std::vector<std::int64_t> GPT2Engine::open_sequences() const {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  std::vector<std::int64_t> ids;
  for (const auto& [id, s] : m.open_seqs) ids.push_back(id);
  return ids;
}

std::vector<std::vector<std::int32_t>> GPT2Engine::generate_continue(
    const std::vector<std::int64_t>& sequences, const std::vector<std::vector<std::int32_t>>& new_tokens,
    const GenerationOptions& o, GenerationStats* stats) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mutex);
  check_options(o, config_);
  detail::require(!sequences.empty(), kOp, "sequences", "must hold at least one sequence id");
  detail::require(new_tokens.size() == sequences.size(), kOp, "new_tokens",
                  "must hold one row per sequence: " + std::to_string(sequences.size()) + " sequences but " +
                      std::to_string(new_tokens.size()) + " rows");
  m.check_loaded();
  const std::int64_t B = static_cast<std::int64_t>(sequences.size());
  std::vector<OpenSequence*> seqs;
  std::vector<GenerationInput> inputs(B);
  std::int64_t pages_needed = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const std::string what = "sequences[" + std::to_string(b) + "]";
    OpenSequence& s = open_sequence_of(m.open_seqs, sequences[b], what);
    detail::require(std::find(seqs.begin(), seqs.end(), &s) == seqs.end(), kOp, "sequences",
                    what + " = " + std::to_string(sequences[b]) + " appears twice");
    seqs.push_back(&s);
    const std::string row = "new_tokens[" + std::to_string(b) + "]";
    check_token_ids(new_tokens[b], config_, "new_tokens", row);
    GenerationInput& g = inputs[b];
    g.start = s.cached;
    g.tokens = s.uncached;
    g.tokens.insert(g.tokens.end(), new_tokens[b].begin(), new_tokens[b].end());
    detail::require(!g.tokens.empty(), kOp, "new_tokens",
                    row + " is empty and " + what + " has no history (a sequence starts with at least one token)");
    const std::int64_t total = g.start + static_cast<std::int64_t>(g.tokens.size());
    // Compared as max_new <= n_positions - total: the sum overflows for max_new near INT64_MAX.
    detail::require(total <= config_.n_positions && o.max_new_tokens <= config_.n_positions - total, kOp,
                    total > config_.n_positions ? "new_tokens" : "max_new_tokens",
                    "is too large: " + what + " would hold " + std::to_string(total) + " tokens, and with " +
                        std::to_string(o.max_new_tokens) + " new tokens it needs more than n_positions = " +
                        std::to_string(config_.n_positions) + " positions");
    const std::int64_t have = s.alloc_id >= 0 ? static_cast<std::int64_t>(m.pages->pages(s.alloc_id).size()) : 0;
    pages_needed += std::max<std::int64_t>(0, detail::ceil_div(total + o.max_new_tokens, kPageSize) - have);
  }
  ScopedDevice on_device(m.device);
  m.ensure_state(B);
  m.ensure_pool(m.pages_in_use() + pages_needed);
  // A sequence's pages are its own from here on (freed by close_sequence), also if this call fails:
  // the history it had stays valid, since only positions past `cached` are written.
  for (std::int64_t b = 0; b < B; ++b) {
    if (seqs[b]->alloc_id < 0) seqs[b]->alloc_id = m.pages->add_sequence();
    inputs[b].seq = seqs[b]->alloc_id;
    m.pages->reserve(inputs[b].seq, inputs[b].start + static_cast<std::int64_t>(inputs[b].tokens.size()) +
                                        o.max_new_tokens);
  }
  std::vector<std::vector<std::int32_t>> result;
  std::vector<std::int64_t> produced;
  m.generate_tokens(inputs, o, &result, &produced, stats);
  for (std::int64_t b = 0; b < B; ++b) {
    // Every token fed through the model has its K/V cached: the inputs and all generated tokens
    // but the last, which the next turn feeds first.
    OpenSequence& s = *seqs[b];
    s.cached = inputs[b].start + static_cast<std::int64_t>(inputs[b].tokens.size()) + produced[b] - 1;
    s.uncached.assign(1, result[b][produced[b] - 1]);
  }
  return result;
}

}  // namespace flashkernel::models
