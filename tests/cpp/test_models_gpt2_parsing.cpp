// GPT-2 checkpoint parsing on hostile input (CPU only): the strict JSON reader, config.json limits
// and unsupported options, the safetensors header checks (dims, byte ranges, dtypes, overflow), the
// host-side checks of from_pretrained that run before the GPU is touched, and a seeded mutation fuzz
// test over all three readers that requires "parses, or throws flashkernel::Error", nothing else.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <regex>
#include <string>
#include <typeinfo>
#include <vector>

#include "flashkernel/models/gpt2.h"
#include "flashkernel/status.h"
#include "models/gpt2/json.h"
#include "test_utils.h"

namespace flashkernel::models {
namespace {

namespace fs = std::filesystem;
using testing::expect_argument_error;

// Throws an Error (of any subclass) whose message contains `needle`.
void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Like expect_argument_error, and the message must contain `needle` too.
void expect_argument_error_with(const std::function<void()>& fn, const std::string& argument,
                                const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected ArgumentError naming '" << argument << "'";
  } catch (const ArgumentError& e) {
    EXPECT_EQ(e.argument(), argument) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

class TempDir {
 public:
  explicit TempDir(const std::string& tag)
      : path_(fs::temp_directory_path() / ("fk_gpt2_parse_" + tag + "_" + std::to_string(testing::fresh_seed()))) {
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& name) const { return path_ / name; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file: u64 little-endian header length, the header, the data section.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out;
  const std::uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) out += static_cast<char>((len >> (8 * i)) & 0xFF);
  return out + header + data;
}

// One header entry written verbatim (shape and offsets as JSON text, so tests can make them wrong).
std::string st_entry(const std::string& name, const std::string& dtype, const std::string& shape,
                     const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

std::string st_header(const std::vector<std::string>& entries) {
  std::string h = "{\"__metadata__\":{\"format\":\"pt\"}";
  for (const auto& e : entries) h += "," + e;
  return h + "}";
}

// A file with one tensor `shape` (JSON) of `dtype` over `data_bytes` bytes at [0, data_bytes).
std::string one_tensor(const std::string& dtype, const std::string& shape, std::size_t data_bytes,
                       const std::string& offsets = "") {
  const std::string offs = offsets.empty() ? "[0," + std::to_string(data_bytes) + "]" : offsets;
  return safetensors_bytes(st_header({st_entry("t", dtype, shape, offs)}), std::string(data_bytes, '\x01'));
}

// GPT-2 124M's config.json as published by HuggingFace.
const char* kHfGpt2Config = R"({
  "activation_function": "gelu_new",
  "architectures": ["GPT2LMHeadModel"],
  "attn_pdrop": 0.1,
  "bos_token_id": 50256,
  "embd_pdrop": 0.1,
  "eos_token_id": 50256,
  "initializer_range": 0.02,
  "layer_norm_epsilon": 1e-05,
  "model_type": "gpt2",
  "n_ctx": 1024,
  "n_embd": 768,
  "n_head": 12,
  "n_layer": 12,
  "n_positions": 1024,
  "resid_pdrop": 0.1,
  "summary_activation": null,
  "summary_first_dropout": 0.1,
  "summary_proj_to_labels": true,
  "summary_type": "cls_index",
  "summary_use_proj": true,
  "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
  "vocab_size": 50257
})";

// ------------------------------------------------------------------------------------ JSON reader

json::Value parse(const std::string& text) { return json::parse(text, "test"); }

TEST(ModelsGpt2Json, AcceptsValidJson) {
  const json::Value v = parse(R"( {"a": [1, -0.5, 2e3, 1E+2, -0, 0.25e-1], "b": {"c": null, "d": true, "e": false},
                                   "s": "x\"\\\/\b\f\n\r\t\u00e9\u20ac\ud83d\ude00 \u0080", "big": 123456789012345678901234567890,
                                   "tiny": 1e-400, "utf8": "caf\u00e9 ü € 😀"} )"
                                  "\n");
  ASSERT_EQ(v.kind, json::Value::Kind::kObject);
  const json::Value& a = *v.find("a");
  ASSERT_EQ(a.items.size(), 6u);
  EXPECT_EQ(a.items[2].number, 2000.0);
  EXPECT_EQ(a.items[3].number, 100.0);
  EXPECT_EQ(a.items[5].number, 0.025);
  // \u escapes come out as UTF-8; a surrogate pair is one 4-byte character, not two 3-byte halves.
  EXPECT_EQ(v.find("s")->text, "x\"\\/\b\f\n\r\t\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80 \xC2\x80");
  EXPECT_EQ(v.find("big")->text, "123456789012345678901234567890");  // the exact literal is kept
  EXPECT_EQ(v.find("tiny")->number, 0.0);
  EXPECT_EQ(v.find("utf8")->text, "caf\xC3\xA9 \xC3\xBC \xE2\x82\xAC \xF0\x9F\x98\x80");
  // Nesting up to the bound is fine.
  const int d = json::kMaxDepth;
  EXPECT_NO_THROW(parse(std::string(d, '[') + std::string(d, ']')));
}

TEST(ModelsGpt2Json, RejectsMalformedJson) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      // numbers outside the JSON grammar (strtod would take them)
      {"[01]", "leading zero"},
      {"[1.]", "digit must follow '.'"},
      {"[.5]", "unexpected character"},
      {"[-]", "digit must follow '-'"},
      {"[1e]", "exponent"},
      {"[+1]", "unexpected character"},
      {"[0x10]", "expected ',' or ']'"},
      {"[1e999]", "too large"},
      {"[NaN]", "unexpected character"},
      {"[Infinity]", "unexpected character"},
      // structure
      {"[1,]", "unexpected character"},
      {R"({"a":1,})", "expected a string key"},
      {R"({"a" 1})", "expected ':'"},
      {"", "unexpected end"},
      {"[1] [2]", "trailing characters"},
      {R"({"a": 1, "a": 2})", "duplicate key"},
      // strings
      {"[\"a\x01\"]", "control character"},
      {"[\"a\tb\"]", "control character"},
      {R"(["\uZZZZ"])", "4 hex digits"},
      {R"(["\u-123"])", "4 hex digits"},
      {R"(["\u12"])", "\\u"},
      {R"(["\ud800"])", "high surrogate"},
      {R"(["\ud800\u0041"])", "high surrogate"},
      {R"(["\udc00"])", "low surrogate"},
      {R"(["\x"])", "bad escape"},
      {"[\"\xFF\"]", "UTF-8"},
      {"[\"\xC0\xAF\"]", "UTF-8"},          // overlong '/'
      {"[\"\xE0\x80\xAF\"]", "UTF-8"},      // overlong '/'
      {"[\"\xED\xA0\x80\"]", "UTF-8"},      // an encoded surrogate
      {"[\"\xF4\x90\x80\x80\"]", "UTF-8"},  // past U+10FFFF
      {"[\"\xE2\x82\"]", "UTF-8"},          // truncated sequence
      {"[\"\x80\"]", "UTF-8"},              // stray continuation byte
      {"\xEF\xBB\xBF{}", "unexpected character '\\xef'"},  // a byte-order mark is not JSON
  };
  for (const auto& [text, why] : bad) {
    SCOPED_TRACE(text);
    expect_error([&] { parse(text); }, why);
  }
  // One level past the bound, for arrays and objects: an error, not a stack overflow.
  const int d = json::kMaxDepth + 1;
  expect_error([&] { parse(std::string(d, '[') + std::string(d, ']')); }, "nesting deeper");
  std::string objects;
  for (int i = 0; i < d; ++i) objects += "{\"a\":";
  expect_error([&] { parse(objects + "1" + std::string(d, '}')); }, "nesting deeper");
  expect_error([&] { parse(std::string(100000, '[')); }, "nesting deeper");
}

TEST(ModelsGpt2Json, BoundsTheNumberOfValues) {
  // Tiny values cost ~50x their bytes in memory: the count is bounded, not only the text length.
  std::string many = "[0";
  many.reserve(2 * json::kMaxValues + 2);
  for (std::size_t i = 1; i + 1 < json::kMaxValues; ++i) many += ",0";
  EXPECT_NO_THROW(parse(many + "]"));  // the array itself is one value too: exactly at the bound
  expect_error([&] { parse(many + ",0]"); }, "more than");
}

// ---------------------------------------------------------------------------------------- config

TEST(ModelsGpt2ConfigLimits, ParsesHfGpt2Config) {
  const GPT2Config c = GPT2Config::from_json(kHfGpt2Config);
  EXPECT_EQ(c.vocab_size, 50257);
  EXPECT_EQ(c.n_layer, 12);
  EXPECT_FLOAT_EQ(c.layer_norm_epsilon, 1e-5f);
  // The supported values of the checked options, spelled out, and an option the engine's math
  // already matches (fp32 softmax), are accepted.
  EXPECT_NO_THROW(GPT2Config::from_json(R"({"tie_word_embeddings": true, "scale_attn_weights": true,
      "scale_attn_by_inverse_layer_idx": false, "add_cross_attention": false, "reorder_and_upcast_attn": true,
      "n_inner": null, "activation_function": "gelu_pytorch_tanh"})"));
  // The bounds themselves are accepted.
  GPT2Config big;
  big.vocab_size = GPT2Config::kMaxVocabSize;
  big.n_positions = GPT2Config::kMaxPositions;
  big.n_layer = GPT2Config::kMaxLayers;
  big.n_embd = GPT2Config::kMaxEmbd;
  big.n_head = GPT2Config::kMaxEmbd / 128;
  EXPECT_NO_THROW(big.validate());
}

TEST(ModelsGpt2ConfigLimits, RejectsValuesPastTheLimits) {
  auto cfg = [](const std::string& fields) { return [fields] { GPT2Config::from_json("{" + fields + "}"); }; };
  // The H200 reproduction: this config made from_pretrained build a billion-layer model.
  expect_argument_error(cfg(R"("n_layer": 1000000000)"), "config.n_layer");
  expect_argument_error(cfg(R"("n_layer": 1e9)"), "config.n_layer");
  expect_argument_error(cfg(R"("n_layer": 1025)"), "config.n_layer");
  expect_argument_error(cfg(R"("n_layer": 0)"), "config.n_layer");
  expect_argument_error(cfg(R"("vocab_size": 16777217)"), "config.vocab_size");
  expect_argument_error(cfg(R"("vocab_size": 2147483647)"), "config.vocab_size");
  expect_argument_error(cfg(R"("n_positions": 1048577)"), "config.n_positions");
  expect_argument_error(cfg(R"("n_embd": 131072, "n_head": 1024)"), "config.n_embd");
  expect_argument_error(cfg(R"("n_embd": -768, "n_head": -12)"), "config.n_embd");
  expect_argument_error(cfg(R"("n_embd": 768, "n_head": 7)"), "config.n_head");
  // Huge numbers: rejected by range before any conversion to an integer.
  expect_argument_error_with(cfg(R"("n_layer": 1e300)"), "config.n_layer", "out of range");
  expect_argument_error_with(cfg(R"("n_layer": -1e300)"), "config.n_layer", "out of range");
  expect_argument_error_with(cfg(R"("n_positions": 18446744073709551616)"), "config.n_positions", "out of range");
  expect_argument_error(cfg(R"("n_head": 12.5)"), "config.n_head");
  expect_argument_error(cfg(R"("vocab_size": "50257")"), "config.vocab_size");
  expect_argument_error(cfg(R"("n_layer": true)"), "config.n_layer");
  // layer_norm_epsilon: finite, positive, at most 1; 1e39 is inf as a float.
  expect_argument_error(cfg(R"("layer_norm_epsilon": 1e39)"), "config.layer_norm_epsilon");
  expect_argument_error(cfg(R"("layer_norm_epsilon": 2)"), "config.layer_norm_epsilon");
  expect_argument_error(cfg(R"("layer_norm_epsilon": 0)"), "config.layer_norm_epsilon");
  expect_argument_error(cfg(R"("layer_norm_epsilon": 1e-50)"), "config.layer_norm_epsilon");  // 0 as a float
  expect_argument_error(cfg(R"("layer_norm_epsilon": "1e-5")"), "config.layer_norm_epsilon");
}

TEST(ModelsGpt2ConfigLimits, RejectsUnsupportedOptions) {
  auto cfg = [](const std::string& fields) { return [fields] { GPT2Config::from_json("{" + fields + "}"); }; };
  // Each of these loads and runs, and gives wrong logits if ignored.
  expect_argument_error_with(cfg(R"("tie_word_embeddings": false)"), "config.tie_word_embeddings", "not supported");
  expect_argument_error_with(cfg(R"("scale_attn_weights": false)"), "config.scale_attn_weights", "not supported");
  expect_argument_error_with(cfg(R"("scale_attn_by_inverse_layer_idx": true)"),
                             "config.scale_attn_by_inverse_layer_idx", "not supported");
  expect_argument_error_with(cfg(R"("add_cross_attention": true)"), "config.add_cross_attention", "not supported");
  // Wrong types are errors too, not "absent".
  expect_argument_error(cfg(R"("tie_word_embeddings": 0)"), "config.tie_word_embeddings");
  expect_argument_error(cfg(R"("scale_attn_weights": "false")"), "config.scale_attn_weights");
  expect_argument_error(cfg(R"("activation_function": 5)"), "config.activation_function");
  expect_argument_error(cfg(R"("model_type": ["gpt2"])"), "config.model_type");
  expect_argument_error(cfg(R"("n_inner": 1000)"), "config.n_inner");
  expect_argument_error(cfg(R"("n_inner": "3072")"), "config.n_inner");
  EXPECT_THROW(GPT2Config::from_json("[]"), ArgumentError);
}

TEST(ModelsGpt2ConfigLimits, RejectsFilesThatAreNotConfigs) {
  TempDir dir("cfgfile");
  // A directory opens as a stream on Linux and reads as nothing: say what it is instead.
  expect_argument_error_with([&] { GPT2Config::from_json_file(dir.path().string()); }, "config_path",
                             "regular file");
  // A huge file (sparse: no disk used) is refused by its size before it is read.
  const fs::path big = dir / "config.json";
  write_bytes(big, "{}");
  fs::resize_file(big, std::uintmax_t(1) << 30);
  expect_argument_error_with([&] { GPT2Config::from_json_file(big.string()); }, "config_path", "bytes");
}

// ----------------------------------------------------------------------------------- safetensors

class ModelsGpt2SafetensorsHostile : public ::testing::Test {
 protected:
  TempDir dir_{"st"};
  int n_ = 0;

  std::string write(const std::string& bytes) {
    const fs::path p = dir_ / ("f" + std::to_string(n_++) + ".safetensors");
    write_bytes(p, bytes);
    return p.string();
  }
  void expect_rejected(const std::string& bytes, const std::string& needle) {
    const std::string p = write(bytes);
    expect_argument_error_with([&] { SafetensorsFile f(p); }, "path", needle);
  }
};

TEST_F(ModelsGpt2SafetensorsHostile, AcceptsValidFiles) {
  // Every supported dtype, a skipped dtype (HF's bool attention-mask buffer), a 0-d and an empty tensor.
  const std::string header = st_header({st_entry("a", "F32", "[2,3]", "[0,24]"), st_entry("b", "F16", "[4]", "[24,32]"),
                                        st_entry("c", "BF16", "[]", "[32,34]"),
                                        st_entry("h.0.attn.bias", "BOOL", "[1,1,2,2]", "[34,38]"),
                                        st_entry("e", "F32", "[0,5]", "[38,38]")});
  std::string data(38, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i);
  // The safetensors writer pads the header with spaces to a multiple of 8 bytes.
  const SafetensorsFile f(write(safetensors_bytes(header + "   ", data)));
  ASSERT_EQ(f.entries().size(), 4u);
  EXPECT_FALSE(f.has("h.0.attn.bias"));
  EXPECT_EQ(f.entry("a").shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(f.entry("b").dtype, DType::kFloat16);
  EXPECT_EQ(f.entry("c").dtype, DType::kBFloat16);
  EXPECT_TRUE(f.entry("c").shape.empty());
  EXPECT_EQ(f.entry("e").shape, (std::vector<std::int64_t>{0, 5}));
  EXPECT_EQ(std::memcmp(f.data("b"), data.data() + 24, 8), 0);
}

TEST_F(ModelsGpt2SafetensorsHostile, RejectsBadDims) {
  // [-2, -2] has 4 elements by multiplication: the old reader took it.
  expect_rejected(one_tensor("F32", "[-2,-2]", 16), "non-negative integer, got -2");
  expect_rejected(one_tensor("F32", "[-4]", 16), "non-negative integer");
  // Fractional dims were truncated: [2.5, 2] read as 4 elements.
  expect_rejected(one_tensor("F32", "[2.5,2]", 16), "non-negative integer, got 2.5");
  expect_rejected(one_tensor("F32", "[4e0]", 16), "non-negative integer, got 4e0");
  expect_rejected(one_tensor("F32", "[\"4\"]", 16), "non-negative integer");
  expect_rejected(one_tensor("F32", "[[4]]", 16), "non-negative integer");
  expect_rejected(one_tensor("F32", "4", 16), "shape array");
  // A dim past int64.
  expect_rejected(one_tensor("F32", "[18446744073709551616]", 0), "exceeds int64");
  expect_rejected(one_tensor("F32", "[9223372036854775808]", 0), "exceeds int64");
}

TEST_F(ModelsGpt2SafetensorsHostile, RejectsElementCountsThatOverflow) {
  // 2^62 + 2048 float32 elements are 2^64 + 8192 bytes, which wraps to exactly the 8 KB present.
  expect_rejected(one_tensor("F32", "[4611686018427389952]", 8192), "overflows");
  // 2^52 x 2^12 elements: the product wraps int64 to 0, matching an empty byte range.
  expect_rejected(one_tensor("F32", "[4503599627370496,4096]", 0), "overflows");
  expect_rejected(one_tensor("U8", "[4294967296,4294967296]", 0), "overflows");
  // A zero dim makes any other dim harmless (0 elements), as the format allows.
  const SafetensorsFile ok(write(one_tensor("F32", "[0,9223372036854775807]", 0)));
  EXPECT_EQ(ok.entry("t").shape[1], INT64_MAX);
}

TEST_F(ModelsGpt2SafetensorsHostile, RejectsBadDataOffsets) {
  expect_rejected(one_tensor("F32", "[4]", 16, "[0,12]"), "do not hold the 16 bytes");  // too few for the shape
  expect_rejected(one_tensor("F32", "[4]", 16, "[16,0]"), "do not hold");               // end < begin
  expect_rejected(one_tensor("F32", "[4]", 16, "[0,20]"), "past the end");
  expect_rejected(one_tensor("F32", "[4]", 16, "[4,20]"), "past the end");
  expect_rejected(one_tensor("F32", "[4]", 16, "[-8,8]"), "non-negative integer");
  expect_rejected(one_tensor("F32", "[4]", 16, "[0,16.0]"), "non-negative integer");
  expect_rejected(one_tensor("F32", "[4]", 16, "[0,18446744073709551632]"), "past the end");
  expect_rejected(one_tensor("F32", "[4]", 16, "[0]"), "data_offsets");
  expect_rejected(one_tensor("F32", "[4]", 16, "[0,16,32]"), "data_offsets");
  expect_rejected(one_tensor("F32", "[4]", 16, "\"0-16\""), "data_offsets");
  // Two tensors over the same bytes, a gap, bytes after the last tensor.
  const std::string d24(24, '\0');
  expect_rejected(safetensors_bytes(st_header({st_entry("a", "F32", "[4]", "[0,16]"),
                                               st_entry("b", "F32", "[4]", "[8,24]")}), d24),
                  "overlaps");
  expect_rejected(safetensors_bytes(st_header({st_entry("a", "F32", "[4]", "[0,16]"),
                                               st_entry("b", "F32", "[4]", "[0,16]")}), std::string(16, '\0')),
                  "overlaps");
  expect_rejected(safetensors_bytes(st_header({st_entry("a", "F32", "[2]", "[0,8]"),
                                               st_entry("b", "F32", "[2]", "[16,24]")}), d24),
                  "gap");
  expect_rejected(safetensors_bytes(st_header({st_entry("a", "F32", "[2]", "[8,16]")}), std::string(16, '\0')),
                  "gap");
  expect_rejected(one_tensor("F32", "[4]", 16, "[0,16]") + "xx", "2 bytes after the last tensor");
  // The skipped dtypes are checked the same way.
  expect_rejected(one_tensor("BOOL", "[4]", 5, "[0,5]"), "do not hold the 4 bytes");
}

TEST_F(ModelsGpt2SafetensorsHostile, RejectsBadDtypesAndStructure) {
  expect_rejected(one_tensor("F33", "[4]", 16), "unknown dtype 'F33'");
  expect_rejected(one_tensor("f32", "[4]", 16), "unknown dtype");
  expect_rejected(one_tensor("F4", "[4]", 2), "unknown dtype");  // sub-byte types have no byte size
  expect_rejected(safetensors_bytes(R"({"t":{"dtype":5,"shape":[4],"data_offsets":[0,16]}})", std::string(16, '\0')),
                  "dtype string");
  expect_rejected(safetensors_bytes(R"({"t":{"shape":[4],"data_offsets":[0,16]}})", std::string(16, '\0')),
                  "dtype string");
  expect_rejected(safetensors_bytes(R"({"t":[1,2]})", ""), "is not an object");
  expect_rejected(safetensors_bytes(R"({"__metadata__":[1]})", ""), "__metadata__");
  expect_rejected(safetensors_bytes("[]", ""), "header is not an object");
  // The same name twice: which one a reader keeps would be up to the reader.
  const std::string dup = safetensors_bytes(st_header({st_entry("a", "F32", "[2]", "[0,8]"),
                                                       st_entry("a", "F32", "[2]", "[8,16]")}), std::string(16, '\0'));
  expect_error([&] { SafetensorsFile f(write(dup)); }, "duplicate key");
}

TEST_F(ModelsGpt2SafetensorsHostile, RejectsBadHeaderLengths) {
  std::string bytes = one_tensor("F32", "[4]", 16);
  for (int i = 0; i < 8; ++i) bytes[i] = '\xFF';  // 2^64 - 1: must not wrap when added to 8
  expect_rejected(bytes, "exceeds the file");
  expect_rejected("\x01\x02\x03", "too short");
  // One byte short: the header's JSON is cut off.
  bytes = one_tensor("F32", "[4]", 16);
  bytes[0] = static_cast<char>(bytes[0] - 1);
  expect_error([&] { SafetensorsFile f(write(bytes)); }, "unexpected end of input");
  expect_argument_error_with([&] { SafetensorsFile f(dir_.path().string()); }, "path", "regular file");
}

// ------------------------------------------------------------------ from_pretrained, host side only

// Everything below fails before the engine touches the GPU, so it runs (and must pass) without one.
class ModelsGpt2FromPretrainedChecks : public ::testing::Test {
 protected:
  TempDir dir_{"pretrained"};

  void write_checkpoint(const std::string& config, const std::string& safetensors) {
    write_bytes(dir_ / "config.json", config);
    write_bytes(dir_ / "model.safetensors", safetensors);
  }
  std::string dir() const { return dir_.path().string(); }
};

std::string small_config_json(const std::string& extra = "") {
  return R"({"model_type": "gpt2", "vocab_size": 8, "n_positions": 16, "n_embd": 64, "n_layer": 1, "n_head": 1)" +
         extra + "}";
}

TEST_F(ModelsGpt2FromPretrainedChecks, RejectsHostileConfigBeforeTheGpu) {
  const std::string st = one_tensor("F32", "[2]", 8);
  // The config that made from_pretrained build a billion-layer model (it had not returned after
  // 5 minutes on an H200).
  write_checkpoint(R"({"model_type": "gpt2", "n_layer": 1000000000})", st);
  const auto t0 = std::chrono::steady_clock::now();
  expect_argument_error([&] { GPT2Engine::from_pretrained(dir(), DType::kFloat16); }, "config.n_layer");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  write_checkpoint(small_config_json(R"(, "tie_word_embeddings": false)"), st);
  expect_argument_error([&] { GPT2Engine::from_pretrained(dir(), DType::kFloat16); }, "config.tie_word_embeddings");
  write_checkpoint(small_config_json(), one_tensor("F32", "[-2,-2]", 16));
  expect_argument_error([&] { GPT2Engine::from_pretrained(dir(), DType::kFloat16); }, "path");
}

TEST(ModelsGpt2ConfigLimits, EngineConstructorChecksTheLimitsFirst) {
  // The path of from_hf and random(): a config built in code, not parsed. validate() runs before
  // the engine builds its per-tensor table or touches the GPU.
  GPT2Config c;
  c.n_layer = 1000000000;
  expect_argument_error([&] { GPT2Engine e(c, DType::kFloat16); }, "config.n_layer");
  c.n_layer = 12;
  c.vocab_size = std::int64_t(1) << 40;
  expect_argument_error([&] { GPT2Engine e(c, DType::kFloat16); }, "config.vocab_size");
}

TEST_F(ModelsGpt2FromPretrainedChecks, RejectsAnUntiedLmHead) {
  // wte [8, 64] and a separate lm_head of the same shape that differs in one element.
  const std::size_t n = 8 * 64 * 4;
  std::string wte(n, '\0'), head(n, '\0');
  for (std::size_t i = 0; i < n; ++i) wte[i] = head[i] = static_cast<char>(i * 7);
  head[100] = static_cast<char>(head[100] ^ 1);
  const std::string off1 = "[0," + std::to_string(n) + "]", off2 = "[" + std::to_string(n) + "," + std::to_string(2 * n) + "]";
  for (const char* wte_name : {"transformer.wte.weight", "wte.weight"}) {
    SCOPED_TRACE(wte_name);
    const std::string header = st_header({st_entry(wte_name, "F32", "[8,64]", off1),
                                          st_entry("lm_head.weight", "F32", "[8,64]", off2)});
    write_checkpoint(small_config_json(), safetensors_bytes(header, wte + head));
    expect_argument_error_with([&] { GPT2Engine::from_pretrained(dir(), DType::kFloat16); }, "lm_head.weight",
                               "untied head is not supported");
    // A head equal to wte (both stored) passes this check; what follows needs the GPU (here: a
    // CudaError without one, or an ArgumentError for the tensors this checkpoint lacks).
    write_checkpoint(small_config_json(), safetensors_bytes(header, wte + wte));
    try {
      GPT2Engine::from_pretrained(dir(), DType::kFloat16);
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find("lm_head"), std::string::npos) << e.what();
    }
  }
}

// -------------------------------------------------------------------------- seeded mutation fuzz

// Random byte-level mutations of valid inputs: flips, interesting bytes, inserted tokens and numbers,
// deletions, duplicated and spliced ranges, truncation. Deterministic for a seed (the default is
// fixed; FLASHKERNEL_FUZZ_SEED / FLASHKERNEL_FUZZ_ITERS run other or longer campaigns).
class Mutator {
 public:
  explicit Mutator(std::uint64_t seed) : rng_(seed) {}

  std::string mutate(const std::string& input, const std::vector<std::string>& corpus) {
    std::string s = input;
    const int rounds = 1 + static_cast<int>(below(4));
    for (int r = 0; r < rounds; ++r) mutate_once(s, corpus);
    return s;
  }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }

 private:
  void mutate_once(std::string& s, const std::vector<std::string>& corpus) {
    static const char kBytes[] = {'\0', '\xFF', '\x80', '\xC3', '\xED', '"', '\\', '{', '}', '[', ']', ',',
                                  ':',  '-',    '.',    'e',    '0',    '9', ' ', 'u',  'n', 't', '\x7F', '\n'};
    static const char* kTokens[] = {"-1", "0", "1e999", "-0", "1.5", "4294967296", "18446744073709551615",
                                    "9223372036854775807", "1e-400", "null", "true", "false", "\"\"", "[]", "{}",
                                    "\\u0000", "\\ud800", "\\uDFFF", "\"F32\"", "\"BOOL\"", "\"dtype\"",
                                    "\"shape\"", "\"data_offsets\"", "\"n_layer\"", "\"tie_word_embeddings\"",
                                    "1000000000", "[[[[[[[[", "]]]]", "\xF0\x9F\x98\x80", "\xE2\x82"};
    const std::size_t pos = below(s.size() + 1);
    switch (below(8)) {
      case 0:  // flip a bit
        if (!s.empty()) s[below(s.size())] ^= static_cast<char>(1u << below(8));
        break;
      case 1:  // overwrite with an interesting byte
        if (!s.empty()) s[below(s.size())] = kBytes[below(sizeof(kBytes))];
        break;
      case 2:  // insert a token
        s.insert(pos, kTokens[below(sizeof(kTokens) / sizeof(kTokens[0]))]);
        break;
      case 3:  // replace a run of digits (a number: dim, offset, config value) with a token
        replace_number(s);
        break;
      case 4:  // delete a range
        s.erase(pos, below(std::min<std::size_t>(s.size() - pos, 32) + 1));
        break;
      case 5: {  // duplicate a range of the input into another place
        const std::size_t from = below(s.size() + 1), len = below(std::min<std::size_t>(s.size() - from, 64) + 1);
        s.insert(below(s.size() + 1), s.substr(from, len));
        break;
      }
      case 6: {  // splice in a range of another corpus input
        const std::string& o = corpus[below(corpus.size())];
        const std::size_t from = below(o.size() + 1), len = below(std::min<std::size_t>(o.size() - from, 128) + 1);
        s.insert(pos, o.substr(from, len));
        break;
      }
      default:  // truncate
        s.resize(below(s.size() + 1));
    }
  }
  void replace_number(std::string& s) {
    static const char* kNumbers[] = {"-1", "0", "2.5", "1e3", "4611686018427389952", "18446744073709551616",
                                     "9007199254740993", "1000000000", "1025", "65536", "-0", "1e-400", "7"};
    std::size_t at = s.find_first_of("0123456789", below(s.size() + 1));
    if (at == std::string::npos) return;
    std::size_t end = at;
    while (end < s.size() && s[end] >= '0' && s[end] <= '9') ++end;
    s.replace(at, end - at, kNumbers[below(sizeof(kNumbers) / sizeof(kNumbers[0]))]);
  }

  std::mt19937_64 rng_;
};

std::uint64_t env_or(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

// Runs fn on each mutant; anything but success or a flashkernel::Error (std::bad_alloc from an
// absurd allocation, std::length_error, out_of_range, ...) fails the test with the input that did it.
template <typename Fn>
void fuzz(const char* what, const std::vector<std::string>& corpus, std::uint64_t iterations, Fn&& fn) {
  const std::uint64_t seed = env_or("FLASHKERNEL_FUZZ_SEED", 20261204);
  Mutator m(seed);
  std::uint64_t parsed = 0;
  for (std::uint64_t i = 0; i < iterations; ++i) {
    const std::string input = m.mutate(corpus[m.below(corpus.size())], corpus);
    try {
      fn(input);
      ++parsed;
      // An oracle inside fn failed on an accepted input: report it once, with the input.
      if (::testing::Test::HasFailure()) {
        FAIL() << what << ": seed " << seed << " iteration " << i << " accepted an input of " << input.size()
               << " bytes that breaks the checks above: " << ::testing::PrintToString(input);
      }
    } catch (const Error&) {
    } catch (const std::exception& e) {
      FAIL() << what << ": seed " << seed << " iteration " << i << ": " << typeid(e).name() << " (" << e.what()
             << ") instead of flashkernel::Error for input of " << input.size() << " bytes: "
             << ::testing::PrintToString(input);
    }
  }
  // Some mutants (whitespace, a changed string) stay valid: the campaign reached the success path.
  EXPECT_GT(parsed, 0u) << what;
}

std::vector<std::string> config_corpus() {
  return {kHfGpt2Config, small_config_json(), small_config_json(R"(, "tie_word_embeddings": true, "n_inner": 256)"),
          R"({"n_layer": 2, "layer_norm_epsilon": 1e-6, "name": "caf\u00e9 \ud83d\ude00", "x": [1, [2, {"y": null}]]})"};
}

std::string valid_safetensors() {
  const std::string header = st_header({st_entry("transformer.wte.weight", "F32", "[2,3]", "[0,24]"),
                                        st_entry("b", "F16", "[4]", "[24,32]"), st_entry("c", "BF16", "[]", "[32,34]"),
                                        st_entry("h.0.attn.bias", "BOOL", "[1,1,2,2]", "[34,38]")});
  return safetensors_bytes(header, std::string(38, '\x3C'));
}

// Oracles for what an accepted document holds, written independently of the reader.
bool valid_utf8(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    const int len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    std::uint32_t cp = len == 1 ? b : b & (0x7F >> len);
    for (int k = 1; k < len; ++k) {
      const unsigned char c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    const std::uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

void expect_well_formed(const json::Value& v) {
  static const std::regex kNumber(R"(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?)");
  switch (v.kind) {
    case json::Value::Kind::kNumber:
      ASSERT_TRUE(std::regex_match(v.text, kNumber)) << "accepted the number '" << v.text << "'";
      ASSERT_TRUE(std::isfinite(v.number)) << v.text;
      break;
    case json::Value::Kind::kString:
      ASSERT_TRUE(valid_utf8(v.text)) << "accepted a string that is not UTF-8: " << ::testing::PrintToString(v.text);
      break;
    case json::Value::Kind::kArray:
      for (const auto& item : v.items) expect_well_formed(item);
      break;
    case json::Value::Kind::kObject:
      for (const auto& [key, item] : v.fields) {
        ASSERT_TRUE(valid_utf8(key)) << "accepted a key that is not UTF-8: " << ::testing::PrintToString(key);
        expect_well_formed(item);
      }
      break;
    default:
      break;
  }
}

TEST(ModelsGpt2Fuzz, JsonReader) {
  std::vector<std::string> corpus = config_corpus();
  const std::string st = valid_safetensors();
  corpus.push_back(st.substr(8, st.size() - 8 - 38));  // the safetensors header alone
  fuzz("json", corpus, env_or("FLASHKERNEL_FUZZ_ITERS", 100000),
       [](const std::string& s) { expect_well_formed(json::parse(s, "fuzz")); });
}

TEST(ModelsGpt2Fuzz, ConfigLoader) {
  fuzz("config", config_corpus(), env_or("FLASHKERNEL_FUZZ_ITERS", 100000), [](const std::string& s) {
    const GPT2Config c = GPT2Config::from_json(s);
    // Whatever got through is within the limits the engine relies on.
    ASSERT_TRUE(c.n_layer >= 1 && c.n_layer <= GPT2Config::kMaxLayers);
    ASSERT_TRUE(c.vocab_size >= 1 && c.vocab_size <= GPT2Config::kMaxVocabSize);
    ASSERT_TRUE(c.n_positions >= 1 && c.n_positions <= GPT2Config::kMaxPositions);
    ASSERT_TRUE(c.head_dim() == 64 || c.head_dim() == 128);
  });
}

TEST(ModelsGpt2Fuzz, SafetensorsHeader) {
  TempDir dir("fuzz");
  std::uint64_t n = 0;
  const std::string valid = valid_safetensors();
  // Mutations land mostly in the header (the data bytes are opaque); a second corpus entry has a
  // header length that the mutator can corrupt without touching the JSON.
  const std::vector<std::string> corpus = {valid, valid.substr(0, 8) + valid.substr(8, 200)};
  fuzz("safetensors", corpus, env_or("FLASHKERNEL_FUZZ_ITERS", 100000) / 5, [&](const std::string& s) {
    // A fresh file each time: truncating one in place costs milliseconds on some file systems.
    const fs::path path = dir / ("m" + std::to_string(n++) + ".safetensors");
    write_bytes(path, s);
    struct Remove {
      fs::path p;
      ~Remove() {
        std::error_code ec;
        fs::remove(p, ec);
      }
    } remove{path};
    const SafetensorsFile f(path.string());
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(s[i]);
    const std::size_t data_bytes = s.size() - 8 - header_len;
    // The header as written: every tensor's dims and offsets are plain non-negative integers, its
    // dtype is a safetensors name, and the byte ranges of all tensors tile the data section.
    const json::Value header = json::parse(s.substr(8, header_len), "fuzz header");
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
    for (const auto& [name, t] : header.fields) {
      if (name == "__metadata__") continue;
      static const std::regex kUint("0|[1-9][0-9]*");
      for (const auto& d : t.find("shape")->items) ASSERT_TRUE(std::regex_match(d.text, kUint)) << name << ": " << d.text;
      const auto& offs = t.find("data_offsets")->items;
      ASSERT_EQ(offs.size(), 2u) << name;
      for (const auto& o : offs) ASSERT_TRUE(std::regex_match(o.text, kUint)) << name << ": " << o.text;
      static const std::regex kDtype("BOOL|U8|I8|F8_E5M2|F8_E4M3|F8_E8M0|I16|U16|F16|BF16|I32|U32|F32|I64|U64|F64|C64");
      ASSERT_TRUE(std::regex_match(t.find("dtype")->text, kDtype)) << name;
      ranges.emplace_back(std::stoull(offs[0].text), std::stoull(offs[1].text));
    }
    std::sort(ranges.begin(), ranges.end());
    std::uint64_t covered = 0;
    for (const auto& [b, e] : ranges) {
      ASSERT_EQ(b, covered) << "tensor byte ranges overlap or leave a gap";
      covered = e;
    }
    ASSERT_EQ(covered, data_bytes) << "bytes after the last tensor";
    for (const auto& [name, e] : f.entries()) {
      // Every accepted tensor: non-negative dims, a byte range inside the file of exactly its size.
      std::uint64_t numel = 1;
      for (std::int64_t d : e.shape) {
        ASSERT_GE(d, 0) << name;
        numel *= static_cast<std::uint64_t>(d);
      }
      ASSERT_LE(e.begin, e.end) << name;
      ASSERT_LE(e.end, data_bytes) << name;
      ASSERT_EQ(e.end - e.begin, numel * dtype_size(e.dtype)) << name;
      std::vector<char> copy(e.end - e.begin);
      std::memcpy(copy.data(), f.data(name), copy.size());  // in bounds (a sanitizer build would see it)
    }
  });
}

}  // namespace
}  // namespace flashkernel::models
