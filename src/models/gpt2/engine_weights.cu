// GPT2Engine construction and its weights: the weight arena and its slot table, init_random,
// load_tensor (host or device data converted / transposed on the GPU) and the loaded checks.
#include <cmath>

#include "common/arg_check.h"
#include "common/launch.h"
#include "flashkernel/device_info.h"
#include "models/gpt2/engine_impl.h"

namespace flashkernel::models {

namespace {

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

void GPT2Engine::Impl::check_loaded() const {
  for (const auto& [name, s] : slots) detail::require(s.loaded, kOp, name.c_str(), "was never loaded");
}

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
  // Attention and the MLP are tensor-core ops: on sm_75 fp16 only, refused here, before any loading.
  detail::require_tensor_core_dtype(kOp, dtype);
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

}  // namespace flashkernel::models
