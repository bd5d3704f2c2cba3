// GPT-2 inference engine on FlashKernel's kernels: weights on the GPU (fp16 or bf16), a packed
// prefill (all prompts' tokens in one pass; flash attention per sequence), and a decode step over
// the paged KV cache that is captured once per batch shape in a CUDA graph and replayed. Next-token
// selection (greedy or temperature / top-k / top-p sampling) runs on the GPU inside the graph, so
// the host only reads back the chosen tokens.
//
// Per layer (T tokens): LN1 -> QKV GEMM (cuBLAS) -> bias + split -> KV append (paged) ->
// attention (flash_attention for prefill, paged_decode_attention for decode) -> out-proj GEMM ->
// add_layernorm (residual + bias + LN2 in one kernel) -> gelu_linear (fused FC + bias + GeLU) ->
// FC-proj GEMM -> add_layernorm (residual + bias + next layer's LN1, or ln_f). LM head tied to wte.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "flashkernel/tensor.h"

namespace flashkernel::models {

// The fields of a HuggingFace GPT2Config the engine uses (config.json names).
struct GPT2Config {
  std::int64_t vocab_size = 50257;
  std::int64_t n_positions = 1024;
  std::int64_t n_embd = 768;
  std::int64_t n_layer = 12;
  std::int64_t n_head = 12;
  float layer_norm_epsilon = 1e-5f;

  // Upper bounds validate() enforces: far above any GPT-2-family model, low enough that a hostile
  // config cannot exhaust host memory or overflow size arithmetic.
  static constexpr std::int64_t kMaxVocabSize = std::int64_t(1) << 24;
  static constexpr std::int64_t kMaxPositions = std::int64_t(1) << 20;
  static constexpr std::int64_t kMaxEmbd = std::int64_t(1) << 16;
  static constexpr std::int64_t kMaxLayers = 1024;

  std::int64_t head_dim() const { return n_embd / n_head; }
  // Throws ArgumentError unless the engine's kernels support the shapes (head_dim 64 or 128) and
  // every value is within the bounds above (layer_norm_epsilon in (0, 1]).
  void validate() const;
  // Parses config.json text / a file (at most 16 MiB). Missing or null fields keep GPT-2 124M's
  // values. Options the engine does not implement are rejected with an ArgumentError naming the
  // field: activation_function other than GPT-2's tanh GeLU ("gelu_new", "gelu_pytorch_tanh"),
  // n_inner other than 4 * n_embd, tie_word_embeddings=false, scale_attn_weights=false,
  // scale_attn_by_inverse_layer_idx=true, add_cross_attention=true.
  static GPT2Config from_json(const std::string& text);
  static GPT2Config from_json_file(const std::string& path);
};

// A minimal safetensors reader: the header's tensor table and the raw bytes (the file is read
// into host memory once). entries() lists the F32, F16 and BF16 tensors; tensors of the other
// byte-sized dtypes are checked and skipped. The file is validated as the format requires (header
// at most 100 MB and strict JSON; dims non-negative integers; every tensor's data_offsets hold
// exactly numel * dtype size bytes, computed without overflow; the tensors tile the data section
// with no overlap, gap or excess); anything else throws ArgumentError naming the tensor.
class SafetensorsFile {
 public:
  struct Entry {
    DType dtype = DType::kFloat32;
    std::vector<std::int64_t> shape;
    std::size_t begin = 0, end = 0;  // byte range inside the data section
  };
  explicit SafetensorsFile(const std::string& path);
  const std::map<std::string, Entry>& entries() const { return entries_; }
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const Entry& entry(const std::string& name) const;
  const void* data(const std::string& name) const;

 private:
  std::map<std::string, Entry> entries_;
  std::vector<char> bytes_;
  std::size_t data_offset_ = 0;
};

struct GenerationOptions {
  std::int64_t max_new_tokens = 32;
  bool do_sample = false;
  float temperature = 1.0f;     // > 0
  std::int64_t top_k = 0;       // 0: off
  float top_p = 1.0f;           // in (0, 1]; 1: off
  std::int64_t eos_token_id = -1;  // -1: none. Finished sequences are padded with it.
  std::uint64_t seed = 0;
  // Streaming (optional): called on the calling thread once per new-token index, 0 to
  // max_new_tokens - 1 in order, with one token per prompt (tokens[b] is row b's token `index`),
  // exactly the columns generate() returns (EOS padding after an early stop included). Each call
  // costs one device-to-host copy and a stream synchronization per step, which the graph replays
  // otherwise avoid; unset (the default), generate() makes neither. It runs while the engine's
  // lock is held, so it must not call the same engine. An exception it throws ends the generation:
  // the sequences' pages are freed and the exception propagates out of generate().
  std::function<void(std::int64_t index, const std::vector<std::int32_t>& tokens)> on_tokens;
  // Chunked prefill: a prompt longer than this is prefilled in pieces of at most prefill_chunk
  // tokens, each attending to the cached K/V of the pieces before it (0: the whole prompt in one
  // pass). The activations then scale with the chunk instead of the prompt; the K/V and the
  // logits are those of one pass up to rounding (the attention sums in another order).
  std::int64_t prefill_chunk = 0;
};

// How a decode step runs (docs/ops/gpt2.md). All paths compute the same model; their tokens may
// part only after a near-tie (the fused and persistent paths sum in another order).
//   kAuto (the default): what measured fastest for the step's batch: kFused at batch <=
//     kAutoFusedMaxBatch on a 9.x GPU, else kPdl.
//   kGraph: a CUDA graph of one kernel per op, ordinary launches.
//   kPdl: the same kernels as programmatic dependent launches (ordinary ones below sm_90).
//   kFused: 5 kernels per layer, the LayerNorms, residual adds, GeLU and KV append folded into the
//     projections (batch <= 8 and a 16-bit cache; elsewhere kPdl's layers).
//   kPersistent: all layers in one cooperative kernel (batch <= 8; elsewhere the graph).
enum class DecodePath { kAuto, kGraph, kPdl, kFused, kPersistent };
// kAuto's largest fused batch. Measured (profiling/gpt2_decode_paths_*.txt, decode us/step, fused
// vs pdl): H200 batch 1 262 vs 360, batch 2 359 vs 406, batch 4 453 vs 455, batch 8 697 vs 649;
// H100 batch 1 275 vs 372, batch 2 367 vs 415, batch 4 453 vs 467, batch 8 700 vs 655. Past 2 rows
// the fused GEMVs' per-row prologue and epilogue eat most of the launches they save (batch 4 is
// even on the H200, 3% on the H100).
inline constexpr std::int64_t kAutoFusedMaxBatch = 2;
// "auto", "graph", "pdl", "fused", "persistent". The parser throws ArgumentError naming `argument`.
DecodePath decode_path_from_name(const std::string& name, const char* argument = "decode_path");
const char* decode_path_name(DecodePath path);

struct GenerationStats {
  double prefill_ms = 0;
  double decode_ms = 0;        // all decode steps, wall clock incl. the final token read (and on_tokens)
  std::int64_t decode_steps = 0;
  std::int64_t graph_captures = 0;  // captures this call made (0 when a cached graph was reused)
  bool persistent_decode = false;   // the decode steps ran on the persistent kernel (else the graph path)
  bool fused_decode = false;        // the graph path's layers were the fused 5-kernel ones (docs/ops/gpt2.md)
};

// Threading: one engine may be shared by several threads. Each method holds a per-engine lock for
// its whole duration (buffers, the KV page allocator, the CUDA stream and graph capture are shared
// by all calls), so concurrent calls run one after another: a second generate() waits until the
// first has returned. Waiting is safe with graph capture, which uses thread-local capture mode on
// the engine's own stream. Different engines run concurrently. config(), dtype() and device() never
// change and take no lock.
//
// Errors: every method validates its arguments first (ArgumentError naming the argument). After any
// error, out-of-memory included (CudaError), the engine stays valid: buffers are grown by dropping
// everything derived from the old one first, so the next call works or raises, and never touches
// freed memory. Each method makes the engine's device current while it runs and restores the
// caller's current device before it returns.
class GPT2Engine {
 public:
  // Uninitialized weights (call load_* or init_random). dtype: float16 or bfloat16. device: a CUDA
  // device ordinal, or -1 for the current device.
  GPT2Engine(const GPT2Config& config, DType dtype, int device = -1);
  ~GPT2Engine();
  GPT2Engine(const GPT2Engine&) = delete;
  GPT2Engine& operator=(const GPT2Engine&) = delete;

  // config.json + model.safetensors from a local directory (nothing is downloaded). Both files are
  // parsed and checked on the host before the GPU is touched; a stored lm_head.weight must equal
  // the token embedding (the engine's head is tied to it).
  static std::unique_ptr<GPT2Engine> from_pretrained(const std::string& dir, DType dtype, int device = -1);
  // HF's initialization (normal(0, 0.02), c_proj scaled by 1/sqrt(2 n_layer), zero biases, unit
  // LayerNorms), seeded; generated on the GPU.
  void init_random(std::uint64_t seed);

  // One tensor in HuggingFace GPT2LMHeadModel naming ("transformer.h.3.attn.c_attn.weight",
  // "h.3.attn.c_attn.weight" and "lm_head.weight" (tied, ignored) are accepted). `data` is host or
  // device memory (on_device: allocated on the engine's device, or managed) of src_dtype
  // (float32/float16/bfloat16), row-major with `shape`; Conv1D weights ([in, out]) are transposed on
  // the GPU. Device memory is read on the engine's stream: work that writes it must be finished.
  // Throws ArgumentError naming the tensor.
  void load_tensor(const std::string& name, const void* data, DType src_dtype, const std::vector<std::int64_t>& shape,
                   bool on_device);
  // Every tensor of the model, HF names (without the "transformer." prefix) -> expected shape.
  std::map<std::string, std::vector<std::int64_t>> expected_tensors() const;
  // Throws unless every tensor was loaded (or init_random ran).
  void check_loaded() const;

  // Teacher-forced logits: one forward pass over each prompt from position 0; writes fp32
  // [sum of prompt lengths, vocab] (prompts concatenated) to device memory `logits`. Ordered after
  // the work already queued on `stream` (nullptr: the legacy default stream); the logits are
  // complete when it returns.
  void forward_logits(const std::vector<std::vector<std::int32_t>>& prompts, float* logits, cudaStream_t stream = nullptr);

  // Generates max_new_tokens tokens per prompt (prompts may differ in length). Each row of the
  // result has exactly max_new_tokens tokens (after EOS: eos_token_id). Pages of every sequence are
  // freed before returning.
  std::vector<std::vector<std::int32_t>> generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                                  const GenerationOptions& options, GenerationStats* stats = nullptr);

  // ---- Multi-turn: sequences whose K/V stay in the cache between generate calls.
  //
  // open_sequence() returns the id of a new, empty sequence (ids are never reused). Each
  // generate_continue() on it appends new tokens to its history and generates after them; the
  // history then also holds the generated tokens (through the first EOS where generation stopped
  // there, all max_new_tokens otherwise). Only the tokens the cache does not hold yet are
  // prefilled (the new ones and the last generated token), attending to the cached K/V of the
  // history, so a turn's prefill costs what its own tokens cost, whatever came before. The result
  // equals generate() on the whole history + new tokens, up to rounding. close_sequence() gives
  // the pages back; the pool grows (keeping every open sequence's K/V) when a call needs more.
  std::int64_t open_sequence();
  // ArgumentError naming `sequence` for an id that is not open.
  void close_sequence(std::int64_t sequence);
  std::int64_t sequence_length(std::int64_t sequence) const;  // tokens in its history
  std::vector<std::int64_t> open_sequences() const;
  // new_tokens[b] continues sequences[b] (distinct open ids); a row may be empty when its
  // sequence already has a history (then generation simply goes on). History + new tokens +
  // max_new_tokens must fit in n_positions. Returns max_new_tokens tokens per row, as generate().
  // On an error the sequences keep the history they had before the call.
  std::vector<std::vector<std::int32_t>> generate_continue(const std::vector<std::int64_t>& sequences,
                                                           const std::vector<std::vector<std::int32_t>>& new_tokens,
                                                           const GenerationOptions& options,
                                                           GenerationStats* stats = nullptr);

  // The KV cache's element type: dtype() (the default) or float8_e4m3fn, an FP8 cache storing K
  // and V as e4m3 with scale 1.0 for every (layer, head) (why a fixed 1.0: docs/ops/gpt2.md),
  // which halves the cache's bytes and the bytes decode attention reads. The decode step then
  // runs on the CUDA-graph path (the persistent kernel reads 16-bit K/V). Drops the cache and the
  // captured graphs; ArgumentError naming `kv_dtype` for any other type, or while an open sequence
  // has a history (its K/V are in the old type).
  void set_kv_dtype(DType kv_dtype);
  DType kv_dtype() const;

  // The decode path: as FLASHKERNEL_GPT2_DECODE names it when the engine is built (kAuto when
  // unset), then as set here. Setting it drops the captured decode graphs; ArgumentError naming
  // `path` for a value outside the enum.
  void set_decode_path(DecodePath path);
  DecodePath decode_path() const;

  const GPT2Config& config() const { return config_; }
  DType dtype() const { return dtype_; }
  int device() const;  // the CUDA device ordinal the engine lives on
  std::size_t weight_bytes() const;
  std::size_t device_bytes() const;  // weights + KV pool + workspaces currently allocated

  struct Impl;

 private:
  GPT2Config config_;
  DType dtype_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flashkernel::models
