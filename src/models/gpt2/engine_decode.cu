// GPT2Engine::Impl's decode step: its CUDA-graph capture (one graph per batch shape, cached) and
// the persistent-decode plumbing (layer table, kernel arguments, barrier watchdog, trace).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/arg_check.h"
#include "common/launch.h"
#include "models/gpt2/engine_impl.h"

namespace flashkernel::models {

void GPT2Engine::Impl::clear_graphs() {
  for (auto& [key, g] : graphs) detail::discard_cuda_error(cudaGraphExecDestroy(g));
  graphs.clear();
  graph_persistent.clear();
}

PersistentDecodeArgs GPT2Engine::Impl::persistent_args(std::int64_t B, std::int64_t max_seq_len) {
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
  set_cache_view(pa, max_seq_len);
  pa.slots = dec_slots;
  pa.eps = cfg.layer_norm_epsilon;
  pa.scale = 1.f / std::sqrt(float(cfg.head_dim()));
  pa.sync = persist_sync.as<unsigned int>(0);
  pa.timeout_ms = persistent_timeout_ms;
  pa.drop_arrival = persistent_drop_arrival;
  pa.drop_weight_copy = persistent_drop_copy;
  pa.trace = persist_trace.get() != nullptr ? persist_trace.as<unsigned long long>(0) : nullptr;
  pa.dtype = dtype;
  return pa;
}

PagedDecodeArgs GPT2Engine::Impl::paged_decode_args(std::int64_t rows, std::int64_t max_seq_len) const {
  PagedDecodeArgs pa;
  pa.q = q;
  pa.out = att;
  pa.batch = rows;
  pa.num_q_heads = cfg.n_head;
  set_cache_view(pa, max_seq_len);
  pa.scale = 1.f;
  return pa;
}

void GPT2Engine::Impl::ensure_persistent_tables() {
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

void GPT2Engine::Impl::write_persistent_trace(double step_us) {
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

void GPT2Engine::Impl::check_persistent_fault() {
  if (persist_sync.get() == nullptr) return;
  int fault = 0;
  FK_CUDA_CHECK(cudaMemcpy(&fault, persist_sync.as<unsigned int>(0) + 1, sizeof(int), cudaMemcpyDeviceToHost));
  if (fault == 0) return;
  FK_CUDA_CHECK(cudaMemset(persist_sync.as<unsigned int>(0) + 1, 0, sizeof(int)));
  if (fault < 0) {  // WeightRing::wait: the bulk copy of a GEMV's weights never completed
    const int gemv = -fault - 1;
    throw CudaError("gpt2 engine: the persistent decode step stopped: the weight copy of GEMV " +
                    std::to_string(gemv) + " (layer " + std::to_string(gemv / 4) + ") did not complete within " +
                    std::to_string(persistent_timeout_ms / 2) + " ms (half the barrier watchdog); the generation's tokens are invalid");
  }
  const int layer = (fault - 1) / 5, stage = (fault - 1) % 5 + 1;
  throw CudaError("gpt2 engine: the persistent decode step stopped: a block waited more than " +
                  std::to_string(persistent_timeout_ms) + " ms at grid barrier " + std::to_string(fault - 1) +
                  " (layer " + std::to_string(layer) + ", after stage S" + std::to_string(stage) +
                  "); the generation's tokens are invalid");
}

void GPT2Engine::Impl::decode_step(std::int64_t B, std::int64_t max_seq_len, const PersistentDecodePlan* plan) {
  embed(w("wte.weight"), w("wpe.weight"), ds.tokens, ds.positions, h, B, cfg.n_embd, dtype, page_table, max_pages,
        kPageSize, dec_slots, seq_lens, stream);
  if (plan != nullptr) {
    persistent_decode(persistent_args(B, max_seq_len), *plan, stream);
  } else if (fused_decode_supported(B)) {
    fused_decode_layers(B, max_seq_len);
  } else {
    layers(B, dec_slots, nullptr, max_seq_len);
  }
  gemm(x, w("wte.weight"), logits, B, cfg.vocab_size, cfg.n_embd, true);
  select_tokens(logits, B, cfg.vocab_size, params, ds, stream);
}

cudaGraphExec_t GPT2Engine::Impl::decode_graph(std::int64_t B, std::int64_t max_seq_len, std::int64_t* captures) {
  const auto key = std::make_pair(B, max_seq_len);
  if (auto it = graphs.find(key); it != graphs.end()) return it->second;
  // Workspace for the largest split count this shape can use, sized before capture.
  std::size_t need = paged_decode_workspace_bytes(paged_decode_args(B, max_seq_len));
  PersistentDecodePlan plan;
  if (use_persistent() && use_decode_gemv) {
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
    const pdl::DependentLaunches dependent(use_dependent_launches() && !plan.supported);
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

}  // namespace flashkernel::models
