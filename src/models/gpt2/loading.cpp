// Host-side loading: GPT2Config from config.json, the safetensors reader, and the checkpoint
// directory loader (config.json + model.safetensors -> GPT2Engine).
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/arg_check.h"
#include "flashkernel/models/gpt2.h"
#include "flashkernel/status.h"
#include "models/gpt2/json.h"

namespace flashkernel::models {
namespace {

constexpr const char* kOp = "gpt2";

std::string read_file(const std::string& path, const char* argument) {
  std::ifstream f(path, std::ios::binary);
  detail::require(f.good(), kOp, argument, "cannot open '" + path + "'");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::int64_t int_field(const json::Value& obj, const char* key, std::int64_t fallback) {
  const json::Value* v = obj.find(key);
  if (v == nullptr || v->kind == json::Value::Kind::kNull) return fallback;
  detail::require(v->kind == json::Value::Kind::kNumber && v->number == std::floor(v->number), kOp,
                  (std::string("config.") + key).c_str(), "must be an integer");
  return static_cast<std::int64_t>(v->number);
}

}  // namespace

void GPT2Config::validate() const {
  detail::require(vocab_size >= 1 && vocab_size < (std::int64_t(1) << 31), kOp, "config.vocab_size",
                  "must be in [1, 2^31), got " + std::to_string(vocab_size));
  detail::require(n_positions >= 1, kOp, "config.n_positions", "must be >= 1, got " + std::to_string(n_positions));
  detail::require(n_layer >= 1, kOp, "config.n_layer", "must be >= 1, got " + std::to_string(n_layer));
  detail::require(n_head >= 1 && n_embd % n_head == 0, kOp, "config.n_head",
                  "must divide n_embd (" + std::to_string(n_embd) + "), got " + std::to_string(n_head));
  detail::require(head_dim() == 64 || head_dim() == 128, kOp, "config.n_embd",
                  "/ n_head must be 64 or 128 (the attention kernels' head sizes), got " + std::to_string(head_dim()));
  detail::require(layer_norm_epsilon > 0.f, kOp, "config.layer_norm_epsilon", "must be > 0");
}

GPT2Config GPT2Config::from_json(const std::string& text) {
  const json::Value doc = json::parse(text, "config.json");
  detail::require(doc.kind == json::Value::Kind::kObject, kOp, "config", "must be a JSON object");
  GPT2Config c;
  c.vocab_size = int_field(doc, "vocab_size", c.vocab_size);
  c.n_positions = int_field(doc, "n_positions", c.n_positions);
  c.n_embd = int_field(doc, "n_embd", c.n_embd);
  c.n_layer = int_field(doc, "n_layer", c.n_layer);
  c.n_head = int_field(doc, "n_head", c.n_head);
  if (const json::Value* eps = doc.find("layer_norm_epsilon"); eps && eps->kind == json::Value::Kind::kNumber) {
    c.layer_norm_epsilon = static_cast<float>(eps->number);
  }
  if (const json::Value* inner = doc.find("n_inner"); inner && inner->kind != json::Value::Kind::kNull) {
    detail::require(inner->kind == json::Value::Kind::kNumber && inner->number == 4.0 * double(c.n_embd), kOp,
                    "config.n_inner", "must be null or 4 * n_embd (the engine's MLP width)");
  }
  if (const json::Value* act = doc.find("activation_function"); act && act->kind == json::Value::Kind::kString) {
    detail::require(act->text == "gelu_new" || act->text == "gelu_pytorch_tanh", kOp, "config.activation_function",
                    "must be 'gelu_new' (GPT-2's tanh GeLU), got '" + act->text + "'");
  }
  if (const json::Value* mt = doc.find("model_type"); mt && mt->kind == json::Value::Kind::kString) {
    detail::require(mt->text == "gpt2", kOp, "config.model_type", "must be 'gpt2', got '" + mt->text + "'");
  }
  c.validate();
  return c;
}

GPT2Config GPT2Config::from_json_file(const std::string& path) { return from_json(read_file(path, "config_path")); }

SafetensorsFile::SafetensorsFile(const std::string& path) {
  std::string raw = read_file(path, "path");
  bytes_.assign(raw.begin(), raw.end());
  raw.clear();
  detail::require(bytes_.size() >= 8, kOp, "path", "'" + path + "' is too short to be a safetensors file");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes_[i]);  // little endian
  detail::require(header_len <= bytes_.size() - 8, kOp, "path",
                  "'" + path + "': header length " + std::to_string(header_len) + " exceeds the file");
  data_offset_ = 8 + header_len;
  const json::Value header = json::parse(std::string(bytes_.data() + 8, header_len), path + " header");
  detail::require(header.kind == json::Value::Kind::kObject, kOp, "path", "'" + path + "': header is not an object");
  const std::size_t data_size = bytes_.size() - data_offset_;
  for (const auto& [name, v] : header.fields) {
    if (name == "__metadata__") continue;
    const json::Value* dt = v.find("dtype");
    const json::Value* shape = v.find("shape");
    const json::Value* offs = v.find("data_offsets");
    if (!dt || !shape || !offs || offs->items.size() != 2) {
      throw Error(path + ": tensor '" + name + "' lacks dtype/shape/data_offsets");
    }
    Entry e;
    if (dt->text == "F32") {
      e.dtype = DType::kFloat32;
    } else if (dt->text == "F16") {
      e.dtype = DType::kFloat16;
    } else if (dt->text == "BF16") {
      e.dtype = DType::kBFloat16;
    } else {
      continue;  // e.g. HF's bool/uint8 attention-bias buffers: not weights the engine needs
    }
    std::int64_t numel = 1;
    for (const auto& d : shape->items) {
      e.shape.push_back(static_cast<std::int64_t>(d.number));
      numel *= e.shape.back();
    }
    e.begin = static_cast<std::size_t>(offs->items[0].number);
    e.end = static_cast<std::size_t>(offs->items[1].number);
    if (e.begin > e.end || e.end > data_size || e.end - e.begin != std::size_t(numel) * dtype_size(e.dtype)) {
      throw Error(path + ": tensor '" + name + "' has data_offsets inconsistent with its shape or the file size");
    }
    entries_[name] = std::move(e);
  }
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  detail::require(it != entries_.end(), kOp, "name", "no tensor '" + name + "' in the safetensors file");
  return it->second;
}

const void* SafetensorsFile::data(const std::string& name) const {
  return bytes_.data() + data_offset_ + entry(name).begin;
}

std::unique_ptr<GPT2Engine> GPT2Engine::from_pretrained(const std::string& dir, DType dtype, int device) {
  const GPT2Config config = GPT2Config::from_json_file(dir + "/config.json");
  const SafetensorsFile file(dir + "/model.safetensors");
  auto engine = std::make_unique<GPT2Engine>(config, dtype, device);
  for (const auto& [name, e] : file.entries()) {
    // Buffers and the tied head are skipped inside load_tensor; unknown names are an error there.
    engine->load_tensor(name, file.data(name), e.dtype, e.shape, /*on_device=*/false);
  }
  engine->check_loaded();
  return engine;
}

}  // namespace flashkernel::models
