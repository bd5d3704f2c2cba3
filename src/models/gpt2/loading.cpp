// Host-side loading: GPT2Config from config.json, the safetensors reader, and the checkpoint
// directory loader (config.json + model.safetensors -> GPT2Engine). Everything before the engine
// is constructed runs on the CPU only, so hostile files are rejected before any GPU work and the
// checks are tested without a device.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <utility>

#include "common/arg_check.h"
#include "flashkernel/models/gpt2.h"
#include "flashkernel/status.h"
#include "models/gpt2/json.h"

namespace flashkernel::models {
namespace {

constexpr const char* kOp = "gpt2";

// A HF config.json is a few KB; the bound only stops a wrong path (a checkpoint, a device file)
// from being read whole into memory.
constexpr std::uintmax_t kMaxConfigBytes = 16u << 20;
// The safetensors format's own bound on the header.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

// Reads a whole regular file into `out` (a std::string or std::vector<char>), at most max_bytes.
template <typename Bytes>
void read_file(const std::string& path, const char* argument, std::uintmax_t max_bytes, Bytes& out) {
  std::error_code ec;
  // Not a regular file (a directory, a FIFO, /dev/zero): its size says nothing or it never ends.
  detail::require(std::filesystem::is_regular_file(path, ec), kOp, argument,
                  "'" + path + "' does not exist or is not a regular file");
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  detail::require(!ec, kOp, argument, "cannot read the size of '" + path + "'");
  detail::require(size <= max_bytes, kOp, argument,
                  "'" + path + "' is " + std::to_string(size) + " bytes, more than the " + std::to_string(max_bytes) +
                      " this file may have");
  std::ifstream f(path, std::ios::binary);
  detail::require(f.good(), kOp, argument, "cannot open '" + path + "'");
  out.resize(static_cast<std::size_t>(size));
  f.read(out.data(), static_cast<std::streamsize>(size));
  detail::require(static_cast<std::uintmax_t>(f.gcount()) == size, kOp, argument,
                  "'" + path + "' changed size while being read");
}

std::string field_name(const char* key) { return std::string("config.") + key; }

// An integer config value: null or absent keeps the fallback. The range check comes before the
// conversion, which is undefined for doubles outside int64.
std::int64_t int_field(const json::Value& obj, const char* key, std::int64_t fallback) {
  const json::Value* v = obj.find(key);
  if (v == nullptr || v->kind == json::Value::Kind::kNull) return fallback;
  const std::string name = field_name(key);
  detail::require(v->kind == json::Value::Kind::kNumber && v->number == std::floor(v->number), kOp, name.c_str(),
                  "must be an integer");
  detail::require(std::fabs(v->number) <= 9.0e15, kOp, name.c_str(), "is out of range, got " + v->text);
  return static_cast<std::int64_t>(v->number);
}

// A boolean option the engine implements only one way: absent or null means HF's default, which
// is the supported value.
void require_bool_option(const json::Value& obj, const char* key, bool supported, const std::string& why) {
  const json::Value* v = obj.find(key);
  if (v == nullptr || v->kind == json::Value::Kind::kNull) return;
  const std::string name = field_name(key);
  detail::require(v->kind == json::Value::Kind::kBool, kOp, name.c_str(), "must be true or false");
  detail::require(v->boolean == supported, kOp, name.c_str(),
                  std::string("= ") + (v->boolean ? "true" : "false") + " is not supported: " + why);
}

const json::Value* string_field(const json::Value& obj, const char* key) {
  const json::Value* v = obj.find(key);
  if (v == nullptr || v->kind == json::Value::Kind::kNull) return nullptr;
  detail::require(v->kind == json::Value::Kind::kString, kOp, field_name(key).c_str(), "must be a string");
  return v;
}

// A non-negative integer written as plain digits, exactly (shape dims and byte offsets may exceed
// 2^53, where a double would round): "-1", "2.5" and "1e3" are rejected, and so is a value above
// `max`, with `too_large` saying why.
std::uint64_t exact_uint(const json::Value& v, std::uint64_t max, const std::string& context,
                         const std::string& too_large) {
  const bool digits = v.kind == json::Value::Kind::kNumber && !v.text.empty() &&
                      v.text.find_first_not_of("0123456789") == std::string::npos;
  if (!digits) {
    throw ArgumentError(kOp, "path", context + " must be a non-negative integer" +
                                         (v.kind == json::Value::Kind::kNumber ? ", got " + v.text : std::string()));
  }
  std::uint64_t x = 0;
  for (char c : v.text) {
    const bool overflow = __builtin_mul_overflow(x, 10u, &x) ||
                          __builtin_add_overflow(x, static_cast<std::uint64_t>(c - '0'), &x) || x > max;
    if (overflow) throw ArgumentError(kOp, "path", context + " = " + v.text + " " + too_large);
  }
  return x;
}

// Bytes per element of every byte-sized safetensors dtype; 0 for names that are not one.
std::size_t safetensors_dtype_size(const std::string& s) {
  static const std::pair<const char*, std::size_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"I64", 8}, {"U64", 8}, {"F64", 8},     {"C64", 8}};
  for (const auto& [name, size] : kSizes) {
    if (s == name) return size;
  }
  return 0;
}

}  // namespace

void GPT2Config::validate() const {
  // Upper bounds far above any GPT-2-family model but low enough that the engine's host-side
  // bookkeeping (a table entry per tensor) and its size arithmetic (int64 bytes) stay small and
  // exact: a hostile config must fail here, not exhaust memory building a billion-layer model.
  detail::require(vocab_size >= 1 && vocab_size <= kMaxVocabSize, kOp, "config.vocab_size",
                  "must be in [1, " + std::to_string(kMaxVocabSize) + "], got " + std::to_string(vocab_size));
  detail::require(n_positions >= 1 && n_positions <= kMaxPositions, kOp, "config.n_positions",
                  "must be in [1, " + std::to_string(kMaxPositions) + "], got " + std::to_string(n_positions));
  detail::require(n_layer >= 1 && n_layer <= kMaxLayers, kOp, "config.n_layer",
                  "must be in [1, " + std::to_string(kMaxLayers) + "], got " + std::to_string(n_layer));
  detail::require(n_embd >= 1 && n_embd <= kMaxEmbd, kOp, "config.n_embd",
                  "must be in [1, " + std::to_string(kMaxEmbd) + "], got " + std::to_string(n_embd));
  detail::require(n_head >= 1 && n_embd % n_head == 0, kOp, "config.n_head",
                  "must divide n_embd (" + std::to_string(n_embd) + "), got " + std::to_string(n_head));
  detail::require(head_dim() == 64 || head_dim() == 128, kOp, "config.n_embd",
                  "/ n_head must be 64 or 128 (the attention kernels' head sizes), got " + std::to_string(head_dim()));
  detail::require(std::isfinite(layer_norm_epsilon) && layer_norm_epsilon > 0.f && layer_norm_epsilon <= 1.f, kOp,
                  "config.layer_norm_epsilon", "must be in (0, 1], got " + std::to_string(layer_norm_epsilon));
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
  if (const json::Value* eps = doc.find("layer_norm_epsilon"); eps && eps->kind != json::Value::Kind::kNull) {
    detail::require(eps->kind == json::Value::Kind::kNumber, kOp, "config.layer_norm_epsilon", "must be a number");
    c.layer_norm_epsilon = static_cast<float>(eps->number);
  }
  if (const json::Value* inner = doc.find("n_inner"); inner && inner->kind != json::Value::Kind::kNull) {
    detail::require(inner->kind == json::Value::Kind::kNumber && inner->number == 4.0 * double(c.n_embd), kOp,
                    "config.n_inner", "must be null or 4 * n_embd (the engine's MLP width)");
  }
  if (const json::Value* act = string_field(doc, "activation_function")) {
    detail::require(act->text == "gelu_new" || act->text == "gelu_pytorch_tanh", kOp, "config.activation_function",
                    "must be 'gelu_new' (GPT-2's tanh GeLU), got '" + act->text + "'");
  }
  if (const json::Value* mt = string_field(doc, "model_type")) {
    detail::require(mt->text == "gpt2", kOp, "config.model_type", "must be 'gpt2', got '" + mt->text + "'");
  }
  // Options that change the model's math: the engine computes exactly one variant, so any other
  // setting would load fine and give wrong logits. (reorder_and_upcast_attn is accepted: it only
  // moves the softmax to fp32, which the engine's attention does anyway.)
  require_bool_option(doc, "tie_word_embeddings", true, "the engine's LM head is the token embedding (wte)");
  require_bool_option(doc, "scale_attn_weights", true, "the engine scales attention scores by 1/sqrt(head_dim)");
  require_bool_option(doc, "scale_attn_by_inverse_layer_idx", false,
                      "the engine does not scale attention scores by 1/(layer index + 1)");
  require_bool_option(doc, "add_cross_attention", false, "the engine has no cross-attention layers");
  c.validate();
  return c;
}

GPT2Config GPT2Config::from_json_file(const std::string& path) {
  std::string text;
  read_file(path, "config_path", kMaxConfigBytes, text);
  return from_json(text);
}

SafetensorsFile::SafetensorsFile(const std::string& path) {
  read_file(path, "path", std::numeric_limits<std::uintmax_t>::max(), bytes_);
  const std::string file = "'" + path + "'";
  detail::require(bytes_.size() >= 8, kOp, "path", file + " is too short to be a safetensors file");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes_[i]);  // little endian
  detail::require(header_len <= bytes_.size() - 8, kOp, "path",
                  file + ": header length " + std::to_string(header_len) + " exceeds the file");
  detail::require(header_len <= kMaxHeaderBytes, kOp, "path",
                  file + ": header length " + std::to_string(header_len) + " exceeds the format's limit of " +
                      std::to_string(kMaxHeaderBytes));
  data_offset_ = 8 + header_len;
  const json::Value header = json::parse(std::string(bytes_.data() + 8, header_len), path + " header");
  detail::require(header.kind == json::Value::Kind::kObject, kOp, "path", file + ": header is not an object");
  const std::uint64_t data_size = bytes_.size() - data_offset_;

  // Every tensor's byte range, also of the ones the engine skips: together they must tile the data
  // section exactly (no overlap, no gap, nothing past the end), as the format requires.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  for (const auto& [name, v] : header.fields) {
    if (name == "__metadata__") {
      detail::require(v.kind == json::Value::Kind::kObject, kOp, "path", file + ": __metadata__ is not an object");
      continue;
    }
    const std::string tensor = file + ": tensor '" + name + "'";
    detail::require(v.kind == json::Value::Kind::kObject, kOp, "path", tensor + " is not an object");
    const json::Value* dt = v.find("dtype");
    const json::Value* shape = v.find("shape");
    const json::Value* offs = v.find("data_offsets");
    detail::require(dt && dt->kind == json::Value::Kind::kString, kOp, "path", tensor + " lacks a dtype string");
    detail::require(shape && shape->kind == json::Value::Kind::kArray, kOp, "path", tensor + " lacks a shape array");
    detail::require(offs && offs->kind == json::Value::Kind::kArray && offs->items.size() == 2, kOp, "path",
                    tensor + " lacks data_offsets [begin, end]");
    const std::size_t elem = safetensors_dtype_size(dt->text);
    detail::require(elem != 0, kOp, "path", tensor + " has unknown dtype '" + dt->text + "'");

    Entry e;
    // Dims stay within int64 (Entry::shape); the element count and byte size are overflow-checked,
    // so a huge shape cannot wrap around to match a small byte range.
    std::uint64_t nbytes = elem;
    for (const json::Value& d : shape->items) {
      const std::uint64_t dim = exact_uint(d, std::numeric_limits<std::int64_t>::max(), tensor + ": shape entry",
                                           "exceeds int64");
      e.shape.push_back(static_cast<std::int64_t>(dim));
      detail::require(!__builtin_mul_overflow(nbytes, dim, &nbytes), kOp, "path",
                      tensor + ": the shape's byte size overflows 64 bits");
    }
    const std::string past_end = "is past the end of the " + std::to_string(data_size) + "-byte data section";
    const std::uint64_t begin = exact_uint(offs->items[0], data_size, tensor + ": data_offsets[0]", past_end);
    const std::uint64_t end = exact_uint(offs->items[1], data_size, tensor + ": data_offsets[1]", past_end);
    detail::require(begin <= end && end - begin == nbytes, kOp, "path",
                    tensor + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                        ") do not hold the " + std::to_string(nbytes) + " bytes its dtype and shape need");
    ranges.emplace_back(begin, end);
    e.begin = static_cast<std::size_t>(begin);
    e.end = static_cast<std::size_t>(end);
    if (dt->text == "F32") {
      e.dtype = DType::kFloat32;
    } else if (dt->text == "F16") {
      e.dtype = DType::kFloat16;
    } else if (dt->text == "BF16") {
      e.dtype = DType::kBFloat16;
    } else {
      continue;  // e.g. HF's bool/uint8 attention-bias buffers: not weights the engine needs
    }
    entries_[name] = std::move(e);
  }
  std::sort(ranges.begin(), ranges.end());
  std::uint64_t covered = 0;
  for (const auto& [begin, end] : ranges) {
    detail::require(begin == covered, kOp, "path",
                    file + ": tensor data " + (begin < covered ? "overlaps" : "has a gap") + " at byte " +
                        std::to_string(std::min(begin, covered)) + " of the data section");
    covered = end;
  }
  detail::require(covered == data_size, kOp, "path",
                  file + ": the data section has " + std::to_string(data_size - covered) +
                      " bytes after the last tensor");
}

const SafetensorsFile::Entry& SafetensorsFile::entry(const std::string& name) const {
  auto it = entries_.find(name);
  detail::require(it != entries_.end(), kOp, "name", "no tensor '" + name + "' in the safetensors file");
  return it->second;
}

const void* SafetensorsFile::data(const std::string& name) const {
  return bytes_.data() + data_offset_ + entry(name).begin;
}

namespace {

// HF's GPT2LMHeadModel may store the head next to the embedding; the engine has one matrix for both,
// so a head with different values (an untied or fine-tuned head) would silently be dropped.
void check_tied_head(const SafetensorsFile& file) {
  const char* head = "lm_head.weight";
  if (!file.has(head)) return;
  const char* wte = file.has("transformer.wte.weight") ? "transformer.wte.weight" : "wte.weight";
  if (!file.has(wte)) return;  // the head alone is the embedding, stored under the head's name
  const auto& a = file.entry(head);
  const auto& b = file.entry(wte);
  const bool same = a.dtype == b.dtype && a.shape == b.shape &&
                    std::memcmp(file.data(head), file.data(wte), a.end - a.begin) == 0;
  detail::require(same, kOp, head,
                  std::string("differs from ") + wte +
                      ": the engine ties the LM head to the token embedding; an untied head is not supported");
}

}  // namespace

std::unique_ptr<GPT2Engine> GPT2Engine::from_pretrained(const std::string& dir, DType dtype, int device) {
  // All host-side checks first: a bad directory fails in milliseconds, before the GPU is touched.
  const GPT2Config config = GPT2Config::from_json_file(dir + "/config.json");
  const SafetensorsFile file(dir + "/model.safetensors");
  check_tied_head(file);
  auto engine = std::make_unique<GPT2Engine>(config, dtype, device);
  for (const auto& [name, e] : file.entries()) {
    // Buffers and the tied head are skipped inside load_tensor; unknown names are an error there.
    engine->load_tensor(name, file.data(name), e.dtype, e.shape, /*on_device=*/false);
  }
  engine->check_loaded();
  return engine;
}

}  // namespace flashkernel::models
