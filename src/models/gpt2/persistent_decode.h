// The persistent decode step: every transformer layer of one GPT-2 decode step in ONE cooperative
// kernel launch, one CTA per SM, instead of a chain of ~8 kernels per layer. See
// persistent_decode.cu for the stage structure and docs/ops/gpt2.md for the design and its
// measurements.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "flashkernel/kv_cache.h"
#include "flashkernel/tensor.h"

namespace flashkernel::models::gpt2_detail {

// The per-layer description the kernel runs: one pre-LN GPT-2 block. Weights are [out, in]
// row-major (the engine stores Conv1D weights transposed), everything in the model dtype.
struct PersistentLayer {
  const void *ln1_gamma, *ln1_beta;
  const void *w_qkv, *b_qkv;    // [3C, C], [3C]
  const void *w_proj, *b_proj;  // [C, C], [C]
  const void *ln2_gamma, *ln2_beta;
  const void *w_fc, *b_fc;      // [4C, C], [4C] (tanh GeLU after)
  const void *w_fc2, *b_fc2;    // [C, 4C], [C]
};

struct PersistentDecodeArgs {
  const PersistentLayer* layers = nullptr;  // device array [n_layer]
  std::int64_t n_layer = 0, batch = 0, n_embd = 0, n_head = 0, head_dim = 0;
  const void *lnf_gamma = nullptr, *lnf_beta = nullptr;
  void* h = nullptr;      // [batch, C] residual stream: the embeddings in, updated in place
  void* x_out = nullptr;  // [batch, C] ln_f(h) out (the LM head's input)
  void* q = nullptr;      // [batch, C] scratch
  void* a = nullptr;      // [batch, 4C] scratch
  void* workspace = nullptr;  // partial attention results, persistent_decode_plan().workspace_bytes
  std::size_t workspace_bytes = 0;
  void* pool = nullptr;   // paged KV cache, `layout`
  KVCacheLayout layout;
  const std::int32_t* page_table = nullptr;  // [batch, max_pages]
  std::int64_t max_pages = 0;
  const std::int32_t* seq_lens = nullptr;  // [batch], this step's token included
  const std::int64_t* slots = nullptr;     // [batch], where this step's K/V go
  std::int64_t max_seq_len = 0;            // bound on seq_lens (sets the attention split)
  float eps = 1e-5f;
  float scale = 1.f;  // attention softmax scale
  // Grid barrier state: 2 words, {count, fault}; the launcher zeroes count before each launch.
  // fault != 0 after a step: a CTA timed out at barrier fault - 1 (then every later step of the
  // generation ends at once; the engine reports it and clears it).
  unsigned int* sync = nullptr;
  double timeout_ms = 1000.0;
  int drop_arrival = -1;  // test hook: CTA 0 skips this barrier (the watchdog test)
  int drop_weight_copy = -1;  // test hook: CTA 0 never completes this GEMV's weight copy (the ring's watchdog)
  // Debugging aid (nullptr: off): 2 + 10 * n_layer global-timer stamps (ns) of CTA 0 per step:
  // [0] kernel entry, [1 + 2k] CTA 0 reaches barrier k, [2 + 2k] it passed it, [last] ln_f done.
  unsigned long long* trace = nullptr;
  DType dtype = DType::kFloat16;
};

struct PersistentDecodePlan {
  bool supported = false;
  std::string why_not;  // when !supported: the reason (the engine then runs the graph path)
  int grid = 0;         // CTAs: one per SM, all co-resident (cooperative launch)
  int threads = 0;
  std::size_t smem_bytes = 0;
  // The weight ring: each GEMV's slice for this CTA is bulk-copied into one of `ring_slots`
  // shared-memory slots of `slot_bytes`, up to ring_slots GEMVs ahead of the one computing.
  int ring_slots = 0;
  std::size_t slot_bytes = 0;
  std::size_t ring_offset = 0;  // bytes into the dynamic shared memory
  int splits = 0;        // attention splits per (sequence, head)
  int split_tokens = 0;  // tokens per split
  std::size_t workspace_bytes = 0;
};

// Whether (and how) this step runs on the current device. Never throws for an unsupported shape;
// says why instead.
PersistentDecodePlan plan_persistent_decode(const PersistentDecodeArgs& args);

// Zeroes the barrier count and launches the step (capturable in a CUDA graph).
void persistent_decode(const PersistentDecodeArgs& args, const PersistentDecodePlan& plan, cudaStream_t stream);

}  // namespace flashkernel::models::gpt2_detail
