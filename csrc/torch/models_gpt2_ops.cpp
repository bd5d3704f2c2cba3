// PyTorch binding of the GPT-2 engine: a TorchScript custom class (torch.classes.flashkernel.
// GPT2Engine) that owns a flashkernel::models::GPT2Engine. The Python wrapper
// (flashkernel.models.GPT2Engine) builds on it.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "flashkernel/models/gpt2.h"
#include "torch/torch_utils.h"

namespace flashkernel::torch_ops {
namespace {

constexpr const char* kOp = "flashkernel.GPT2Engine";

DType parse_dtype(const std::string& name) {
  if (name == "float16") return DType::kFloat16;
  if (name == "bfloat16") return DType::kBFloat16;
  TORCH_CHECK_TYPE(false, kOp, ": argument 'dtype' must be 'float16' or 'bfloat16', got '", name, "'");
}

std::vector<std::vector<std::int32_t>> to_prompts(const std::vector<std::vector<int64_t>>& prompts) {
  std::vector<std::vector<std::int32_t>> out;
  out.reserve(prompts.size());
  for (const auto& p : prompts) {
    std::vector<std::int32_t> row;
    row.reserve(p.size());
    for (int64_t t : p) {
      TORCH_CHECK_VALUE(t >= 0 && t < (int64_t(1) << 31), kOp, ": argument 'input_ids' holds token id ", t,
                        " outside [0, 2^31)");
      row.push_back(static_cast<std::int32_t>(t));
    }
    out.push_back(std::move(row));
  }
  return out;
}

models::GenerationOptions to_options(int64_t max_new_tokens, bool do_sample, double temperature, int64_t top_k,
                                     double top_p, int64_t eos_token_id, int64_t seed, int64_t prefill_chunk) {
  models::GenerationOptions o;
  o.prefill_chunk = prefill_chunk;
  o.max_new_tokens = max_new_tokens;
  o.do_sample = do_sample;
  o.temperature = static_cast<float>(temperature);
  o.top_k = top_k;
  o.top_p = static_cast<float>(top_p);
  o.eos_token_id = eos_token_id;
  o.seed = static_cast<std::uint64_t>(seed);
  return o;
}

// One streamed generation's hand-over between the worker thread running generate() (producer, from
// the on_tokens callback) and generate_stream_next() (consumer). Shared by both, so whichever side
// lets go last frees it; the worker std::thread itself lives in the holder, which joins it.
struct TokenStream {
  int64_t id = 0;  // generate_stream_start()'s return value, checked by next and stop
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::vector<std::int32_t>> steps;  // produced, not yet read
  bool done = false;                            // generate() returned or threw
  bool cancelled = false;                       // generate_stream_stop(): end at the next step
  std::exception_ptr error;                     // what generate() threw (never the cancellation)
};

// Thrown from on_tokens to end a cancelled generation through generate()'s error path, which
// frees the sequences' pages; it never leaves the worker thread.
struct StreamCancelled {};

struct GPT2EngineHolder : torch::CustomClassHolder {
  std::unique_ptr<models::GPT2Engine> engine;

  GPT2EngineHolder(int64_t vocab_size, int64_t n_positions, int64_t n_embd, int64_t n_layer, int64_t n_head,
                   double layer_norm_epsilon, const std::string& dtype, int64_t device) {
    models::GPT2Config c;
    c.vocab_size = vocab_size;
    c.n_positions = n_positions;
    c.n_embd = n_embd;
    c.n_layer = n_layer;
    c.n_head = n_head;
    c.layer_norm_epsilon = static_cast<float>(layer_norm_epsilon);
    const DType dt = parse_dtype(dtype);
    engine = call_library([&] { return std::make_unique<models::GPT2Engine>(c, dt, static_cast<int>(device)); });
  }
  explicit GPT2EngineHolder(std::unique_ptr<models::GPT2Engine> e) : engine(std::move(e)) {}

  void load_tensor(const std::string& name, const at::Tensor& t) {
    TORCH_CHECK_VALUE(t.defined(), kOp, ": tensor '", name, "' is undefined");
    const DType src = to_dtype(t, kOp, name.c_str());
    TORCH_CHECK_VALUE(!t.is_cuda() || t.device().index() == engine->device(), kOp, ": tensor '", name, "' is on ",
                      t.device(), " but the engine is on cuda:", engine->device(), " (move it there or to the CPU)");
    TORCH_CHECK_VALUE(t.is_cuda() || t.is_cpu(), kOp, ": tensor '", name, "' must be a CPU or CUDA tensor, got one on ",
                      t.device());
    const at::Tensor c = t.contiguous();
    if (c.is_cuda()) c10::cuda::getCurrentCUDAStream(c.device().index()).synchronize();  // engine uses its own stream
    const std::vector<std::int64_t> shape(c.sizes().begin(), c.sizes().end());
    call_library([&] { engine->load_tensor(name, c.data_ptr(), src, shape, c.is_cuda()); });
  }

  void init_random(int64_t seed) { call_library([&] { engine->init_random(static_cast<std::uint64_t>(seed)); }); }
  void check_loaded() { call_library([&] { engine->check_loaded(); }); }

  std::vector<std::string> tensor_names() {
    std::vector<std::string> names;
    for (const auto& [name, shape] : engine->expected_tensors()) names.push_back(name);
    return names;
  }

  std::vector<int64_t> tensor_shape(const std::string& name) {
    const auto all = engine->expected_tensors();
    auto it = all.find(name);
    TORCH_CHECK_VALUE(it != all.end(), kOp, ": argument 'name': no tensor '", name, "'");
    return {it->second.begin(), it->second.end()};
  }

  at::Tensor forward_logits(const std::vector<std::vector<int64_t>>& prompts, int64_t device) {
    const auto p = to_prompts(prompts);
    int64_t total = 0;
    for (const auto& row : p) total += static_cast<int64_t>(row.size());
    TORCH_CHECK_VALUE(device == engine->device(), kOp, ": argument 'device' is ", device,
                      " but the engine is on cuda:", engine->device());
    const at::Device dev(at::kCUDA, static_cast<c10::DeviceIndex>(device));
    at::Tensor logits = at::empty({total, engine->config().vocab_size}, at::TensorOptions().dtype(at::kFloat).device(dev));
    const cudaStream_t s = c10::cuda::getCurrentCUDAStream(dev.index()).stream();
    call_library([&] { engine->forward_logits(p, logits.data_ptr<float>(), s); });
    return logits;
  }

  // Returns (tokens [B, max_new_tokens] int64 on the CPU,
  //          (prefill_ms, decode_ms, decode_steps, graph_captures, decode kernel: 0 the graph of
  //          per-op kernels, 1 the persistent kernel, 2 the graph of fused layers)).
  using GenerateResult = std::tuple<at::Tensor, std::tuple<double, double, int64_t, int64_t, int64_t>>;
  GenerateResult generate(const std::vector<std::vector<int64_t>>& prompts, int64_t max_new_tokens, bool do_sample,
                          double temperature, int64_t top_k, double top_p, int64_t eos_token_id, int64_t seed,
                          int64_t prefill_chunk) {
    const auto p = to_prompts(prompts);
    const auto o = to_options(max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, seed, prefill_chunk);
    models::GenerationStats st;
    return to_result(call_library([&] { return engine->generate(p, o, &st); }), max_new_tokens, st);
  }

  // Multi-turn (GPT2Engine::open_sequence and generate_continue).
  int64_t open_sequence() { return call_library([&] { return engine->open_sequence(); }); }
  void close_sequence(int64_t sequence) { call_library([&] { engine->close_sequence(sequence); }); }
  int64_t sequence_length(int64_t sequence) { return call_library([&] { return engine->sequence_length(sequence); }); }
  std::vector<int64_t> open_sequences() { return call_library([&] { return engine->open_sequences(); }); }
  GenerateResult generate_continue(const std::vector<int64_t>& sequences,
                                   const std::vector<std::vector<int64_t>>& new_tokens, int64_t max_new_tokens,
                                   bool do_sample, double temperature, int64_t top_k, double top_p,
                                   int64_t eos_token_id, int64_t seed, int64_t prefill_chunk) {
    const auto p = to_prompts(new_tokens);
    const auto o = to_options(max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, seed, prefill_chunk);
    models::GenerationStats st;
    return to_result(call_library([&] { return engine->generate_continue(sequences, p, o, &st); }), max_new_tokens,
                     st);
  }

  // Streaming. TorchScript methods cannot take a Python callable, so generate() runs on a worker
  // thread whose on_tokens callback queues each step's tokens, and the caller pulls them with
  // generate_stream_next(). One stream per holder at a time. Arguments are those of generate();
  // the engine validates them on the worker, so a bad one is raised by the first
  // generate_stream_next(). Returns the stream's id: next and stop take it, so a stale handle (a
  // Python generator closed after a newer stream started) can never read or stop the new one.
  int64_t generate_stream_start(const std::vector<std::vector<int64_t>>& prompts, int64_t max_new_tokens,
                                bool do_sample, double temperature, int64_t top_k, double top_p, int64_t eos_token_id,
                                int64_t seed, int64_t prefill_chunk) {
    auto p = to_prompts(prompts);
    auto o = to_options(max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, seed, prefill_chunk);
    std::lock_guard<std::mutex> lock(stream_mutex_);
    // Open until read to the end or stopped, even if generate() already returned: refusing only
    // while the worker runs would make a second start's outcome depend on timing.
    TORCH_CHECK(!stream_, kOp,
                ".generate_stream_start: a token stream is already open on this engine; read it to the end with "
                "generate_stream_next() or end it with generate_stream_stop() first");
    auto s = std::make_shared<TokenStream>();
    s->id = ++last_stream_id_;
    o.on_tokens = [s](std::int64_t, const std::vector<std::int32_t>& tokens) {
      {
        std::lock_guard<std::mutex> s_lock(s->mutex);
        if (s->cancelled) throw StreamCancelled{};
        s->steps.push_back(tokens);
      }
      s->changed.notify_all();
    };
    models::GPT2Engine* e = engine.get();  // outlives the worker: the holder joins it first
    worker_ = std::thread([s, e, p = std::move(p), o = std::move(o)] {
      std::exception_ptr error;
      try {
        e->generate(p, o);
      } catch (const StreamCancelled&) {
      } catch (...) {
        error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> s_lock(s->mutex);
        s->error = error;
        s->done = true;
      }
      s->changed.notify_all();
    });
    stream_ = std::move(s);
    return last_stream_id_;
  }

  // The next step's tokens, int64 [batch] on the CPU, blocking until generated; an empty tensor once
  // all were returned (or after generate_stream_stop()). Raises what the generation raised.
  at::Tensor generate_stream_next(int64_t stream_id) {
    std::shared_ptr<TokenStream> s;
    {
      std::lock_guard<std::mutex> lock(stream_mutex_);
      s = stream_;
    }
    TORCH_CHECK_VALUE(s != nullptr && s->id == stream_id, kOp, ".generate_stream_next: argument 'stream_id' (",
                      stream_id,
                      ") is not a running token stream of this engine (never started, read to the end, or stopped)");
    std::vector<std::int32_t> step;
    std::exception_ptr error;
    bool finished = false;
    {
      std::unique_lock<std::mutex> s_lock(s->mutex);
      s->changed.wait(s_lock, [&] { return !s->steps.empty() || s->done; });
      finished = s->steps.empty();
      if (finished) {
        error = s->error;
      } else {
        step = std::move(s->steps.front());
        s->steps.pop_front();
      }
    }
    if (finished) {  // join the worker (unless generate_stream_stop() already did)
      {
        std::lock_guard<std::mutex> lock(stream_mutex_);
        if (stream_ == s) release_stream_locked();
      }
      if (error) call_library([&] { std::rethrow_exception(error); });
      return at::empty({0}, at::kLong);
    }
    at::Tensor out = at::empty({static_cast<int64_t>(step.size())}, at::kLong);
    auto acc = out.accessor<int64_t, 1>();
    for (std::size_t b = 0; b < step.size(); ++b) acc[b] = step[b];
    return out;
  }

  // Ends the stream (if any): generation stops at its next step, its pages are freed and the tokens
  // not yet read are dropped. Returns once the worker has finished. stream_id -1: whichever runs.
  void generate_stream_stop(int64_t stream_id) {
    std::lock_guard<std::mutex> lock(stream_mutex_);
    if (!stream_ || (stream_id != -1 && stream_->id != stream_id)) return;
    {
      std::lock_guard<std::mutex> s_lock(stream_->mutex);
      stream_->cancelled = true;
    }
    release_stream_locked();
  }

  // The worker holds a raw pointer to the engine: end it before the engine goes.
  ~GPT2EngineHolder() override { generate_stream_stop(-1); }

  int64_t weight_bytes() { return static_cast<int64_t>(engine->weight_bytes()); }
  int64_t device_bytes() { return static_cast<int64_t>(engine->device_bytes()); }
  std::string dtype() { return dtype_name(engine->dtype()); }
  // "float16" / "bfloat16" (the engine's dtype) or "float8_e4m3fn".
  void set_kv_dtype(const std::string& name) {
    TORCH_CHECK_TYPE(name == "float16" || name == "bfloat16" || name == "float8_e4m3fn", kOp,
                     ": argument 'kv_dtype' must be the engine's dtype or 'float8_e4m3fn', got '", name, "'");
    const DType kv = name == "float8_e4m3fn" ? DType::kFloat8E4M3 : parse_dtype(name);
    call_library([&] { engine->set_kv_dtype(kv); });
  }
  std::string kv_dtype() { return dtype_name(engine->kv_dtype()); }
  // "auto", "graph", "pdl", "fused" or "persistent" (models::DecodePath).
  void set_decode_path(const std::string& name) {
    call_library([&] { engine->set_decode_path(models::decode_path_from_name(name)); });
  }
  std::string decode_path() { return models::decode_path_name(engine->decode_path()); }

 private:
  static GenerateResult to_result(const std::vector<std::vector<std::int32_t>>& rows, int64_t max_new_tokens,
                                  const models::GenerationStats& st) {
    at::Tensor out = at::empty({static_cast<int64_t>(rows.size()), max_new_tokens}, at::kLong);
    auto acc = out.accessor<int64_t, 2>();
    for (std::size_t b = 0; b < rows.size(); ++b)
      for (int64_t i = 0; i < max_new_tokens; ++i) acc[b][i] = rows[b][i];
    return {out, {st.prefill_ms, st.decode_ms, st.decode_steps, st.graph_captures,
                 st.persistent_decode ? 1 : (st.fused_decode ? 2 : 0)}};
  }

  // Caller holds stream_mutex_. The join cannot deadlock on it: the worker never takes it (only the
  // stream's own mutex and the engine's lock).
  void release_stream_locked() {
    if (worker_.joinable()) worker_.join();
    stream_.reset();
  }

  std::mutex stream_mutex_;  // guards stream_, worker_ and last_stream_id_
  std::shared_ptr<TokenStream> stream_;
  std::thread worker_;
  int64_t last_stream_id_ = 0;
};

c10::intrusive_ptr<GPT2EngineHolder> from_pretrained(const std::string& path, const std::string& dtype, int64_t device) {
  const DType dt = parse_dtype(dtype);
  auto e = call_library([&] { return models::GPT2Engine::from_pretrained(path, dt, static_cast<int>(device)); });
  return c10::make_intrusive<GPT2EngineHolder>(std::move(e));
}

std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, double> parse_config(const std::string& text) {
  const auto c = call_library([&] { return models::GPT2Config::from_json(text); });
  return {c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head, c.layer_norm_epsilon};
}

// Tensor table of a safetensors file (the CPU-testable half of loading): names, dtypes, and the
// shapes flattened as ranks + dims (schemas cannot return nested lists).
std::tuple<std::vector<std::string>, std::vector<std::string>, std::vector<int64_t>, std::vector<int64_t>>
safetensors_index(const std::string& path) {
  return call_library([&] {
    models::SafetensorsFile f(path);
    std::vector<std::string> names, dtypes;
    std::vector<int64_t> ranks, dims;
    for (const auto& [name, e] : f.entries()) {
      names.push_back(name);
      dtypes.push_back(dtype_name(e.dtype));
      ranks.push_back(static_cast<int64_t>(e.shape.size()));
      dims.insert(dims.end(), e.shape.begin(), e.shape.end());
    }
    return std::make_tuple(names, dtypes, ranks, dims);
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(flashkernel, m) {
  m.class_<GPT2EngineHolder>("GPT2Engine")
      .def(torch::init<int64_t, int64_t, int64_t, int64_t, int64_t, double, std::string, int64_t>())
      .def("load_tensor", &GPT2EngineHolder::load_tensor)
      .def("init_random", &GPT2EngineHolder::init_random)
      .def("check_loaded", &GPT2EngineHolder::check_loaded)
      .def("tensor_names", &GPT2EngineHolder::tensor_names)
      .def("tensor_shape", &GPT2EngineHolder::tensor_shape)
      .def("forward_logits", &GPT2EngineHolder::forward_logits)
      .def("generate", &GPT2EngineHolder::generate)
      .def("generate_continue", &GPT2EngineHolder::generate_continue)
      .def("open_sequence", &GPT2EngineHolder::open_sequence)
      .def("close_sequence", &GPT2EngineHolder::close_sequence)
      .def("sequence_length", &GPT2EngineHolder::sequence_length)
      .def("open_sequences", &GPT2EngineHolder::open_sequences)
      .def("generate_stream_start", &GPT2EngineHolder::generate_stream_start)
      .def("generate_stream_next", &GPT2EngineHolder::generate_stream_next)
      .def("generate_stream_stop", &GPT2EngineHolder::generate_stream_stop)
      .def("weight_bytes", &GPT2EngineHolder::weight_bytes)
      .def("device_bytes", &GPT2EngineHolder::device_bytes)
      .def("dtype", &GPT2EngineHolder::dtype)
      .def("set_kv_dtype", &GPT2EngineHolder::set_kv_dtype)
      .def("kv_dtype", &GPT2EngineHolder::kv_dtype)
      .def("set_decode_path", &GPT2EngineHolder::set_decode_path)
      .def("decode_path", &GPT2EngineHolder::decode_path)
      .def_static("from_pretrained", &from_pretrained);
  m.def("gpt2_parse_config(str text) -> (int, int, int, int, int, float)", &parse_config);
  m.def("gpt2_safetensors_index(str path) -> (str[], str[], int[], int[])", &safetensors_index);
}

}  // namespace flashkernel::torch_ops
