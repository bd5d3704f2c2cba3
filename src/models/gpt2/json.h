// A small JSON reader for the two documents the GPT-2 engine parses itself (config.json and the
// safetensors header), so loading a checkpoint needs no third-party dependency. Strict JSON
// (RFC 8259: objects, arrays, strings with escapes, numbers, true/false/null); strings must be
// valid UTF-8, keys of an object distinct. Errors name the offset.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace flashkernel::models::json {

// Bounds that keep a hostile document from exhausting the stack or host memory.
constexpr int kMaxDepth = 64;  // arrays and objects nested in each other
constexpr std::size_t kMaxValues = std::size_t(1) << 20;

struct Value {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = Kind::kNull;
  bool boolean = false;
  double number = 0;
  std::string text;  // kString; for kNumber the literal (exact integers beyond 2^53)
  std::vector<Value> items;
  std::map<std::string, Value> fields;

  const Value* find(const std::string& key) const {
    auto it = fields.find(key);
    return it == fields.end() ? nullptr : &it->second;
  }
};

// Throws flashkernel::Error("<what>: invalid JSON at byte N: ...").
Value parse(const std::string& text, const std::string& what);

}  // namespace flashkernel::models::json
