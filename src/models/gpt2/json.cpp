// Recursive-descent JSON parser (see json.h). Strict RFC 8259: the files it reads come from
// outside (a downloaded checkpoint), so anything malformed is an error rather than a guess.
#include "models/gpt2/json.h"

#include <charconv>
#include <cmath>

#include "flashkernel/status.h"

namespace flashkernel::models::json {
namespace {

class Parser {
 public:
  Parser(const std::string& s, const std::string& what) : s_(s), what_(what) {}

  Value document() {
    Value v = value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("trailing characters after the document");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw Error(what_ + ": invalid JSON at byte " + std::to_string(pos_) + ": " + why);
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t')) ++pos_;
  }
  char peek() {
    skip_ws();
    if (pos_ >= s_.size()) fail("unexpected end of input");
    return s_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool literal(const char* word) {
    const std::string w(word);
    if (s_.compare(pos_, w.size(), w) == 0) {
      pos_ += w.size();
      return true;
    }
    return false;
  }
  // Bytes from the file go into error messages as \xNN unless printable ASCII, so a message is
  // always valid text (Python decodes it as UTF-8).
  static std::string printable(char c) {
    if (c >= 0x20 && c < 0x7F) return std::string(1, c);
    static const char* hex = "0123456789abcdef";
    const unsigned char u = static_cast<unsigned char>(c);
    return std::string("\\x") + hex[u >> 4] + hex[u & 15];
  }
  bool digit_at(std::size_t i) const { return i < s_.size() && s_[i] >= '0' && s_[i] <= '9'; }

  Value value(int depth) {
    // Each Value costs ~130 bytes, so a header of tiny values ("[0,0,0,...]") would take ~60x its
    // size in memory; the bound keeps that near 150 MB whatever the file says (a GPT-2 safetensors
    // header has ~8 values per tensor, a config.json a few dozen).
    if (++values_ > kMaxValues) fail("more than " + std::to_string(kMaxValues) + " values");
    const char c = peek();
    // Nesting bound (depth counts the enclosing arrays and objects): a hostile file must not
    // overflow the stack.
    if ((c == '{' || c == '[') && depth >= kMaxDepth) {
      fail("nesting deeper than " + std::to_string(kMaxDepth) + " levels");
    }
    Value v;
    if (c == '{') {
      v.kind = Value::Kind::kObject;
      ++pos_;
      if (peek() == '}') {
        ++pos_;
        return v;
      }
      while (true) {
        if (peek() != '"') fail("expected a string key");
        const std::size_t key_at = pos_;
        std::string key = string();
        expect(':');
        Value item = value(depth + 1);
        // Readers disagree on which of two equal keys wins, so a file could show one tensor table
        // to a checker and another to us: refuse instead.
        if (!v.fields.emplace(std::move(key), std::move(item)).second) {
          pos_ = key_at;
          fail("duplicate key");
        }
        const char n = peek();
        ++pos_;
        if (n == '}') break;
        if (n != ',') fail("expected ',' or '}'");
      }
    } else if (c == '[') {
      v.kind = Value::Kind::kArray;
      ++pos_;
      if (peek() == ']') {
        ++pos_;
        return v;
      }
      while (true) {
        v.items.push_back(value(depth + 1));
        const char n = peek();
        ++pos_;
        if (n == ']') break;
        if (n != ',') fail("expected ',' or ']'");
      }
    } else if (c == '"') {
      v.kind = Value::Kind::kString;
      v.text = string();
    } else if (literal("true")) {
      v.kind = Value::Kind::kBool;
      v.boolean = true;
    } else if (literal("false")) {
      v.kind = Value::Kind::kBool;
    } else if (literal("null")) {
      v.kind = Value::Kind::kNull;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Value::Kind::kNumber;
      number(v);
    } else {
      fail("unexpected character '" + printable(c) + "'");
    }
    return v;
  }

  // -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? exactly; from_chars, unlike strtod, does not
  // depend on the process locale's decimal point.
  void number(Value& v) {
    const std::size_t start = pos_;
    std::size_t i = pos_;
    if (s_[i] == '-') ++i;
    if (!digit_at(i)) fail("malformed number: a digit must follow '-'");
    if (s_[i] == '0') {
      ++i;
      if (digit_at(i)) fail("malformed number: leading zero");
    } else {
      while (digit_at(i)) ++i;
    }
    if (i < s_.size() && s_[i] == '.') {
      ++i;
      if (!digit_at(i)) fail("malformed number: a digit must follow '.'");
      while (digit_at(i)) ++i;
    }
    if (i < s_.size() && (s_[i] == 'e' || s_[i] == 'E')) {
      ++i;
      if (i < s_.size() && (s_[i] == '+' || s_[i] == '-')) ++i;
      if (!digit_at(i)) fail("malformed number: a digit must follow the exponent");
      while (digit_at(i)) ++i;
    }
    v.text = s_.substr(start, i - start);
    const auto r = std::from_chars(v.text.data(), v.text.data() + v.text.size(), v.number);
    // A literal too large for a double (1e999) has no value to report; one too small rounds to 0.
    if (r.ec == std::errc::result_out_of_range) {
      const std::size_t e = v.text.find_first_of("eE");
      const bool tiny = e != std::string::npos && v.text[e + 1] == '-';
      if (!tiny) fail("number '" + v.text + "' is too large");
      v.number = v.text[0] == '-' ? -0.0 : 0.0;
    } else if (r.ec != std::errc() || r.ptr != v.text.data() + v.text.size() || !std::isfinite(v.number)) {
      fail("malformed number '" + v.text + "'");
    }
    pos_ = i;
  }

  unsigned hex4() {
    if (pos_ + 4 > s_.size()) fail("short \\u escape");
    unsigned cp = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[pos_++];
      cp <<= 4;
      if (h >= '0' && h <= '9') {
        cp |= unsigned(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        cp |= unsigned(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        cp |= unsigned(h - 'A' + 10);
      } else {
        --pos_;
        fail("\\u escape needs 4 hex digits");
      }
    }
    return cp;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // One UTF-8 sequence starting at pos_, copied to out; rejects overlong forms, surrogates and
  // code points past U+10FFFF, so names compared byte-wise cannot have two spellings.
  void utf8_sequence(std::string& out) {
    const unsigned char b0 = static_cast<unsigned char>(s_[pos_]);
    int len = 0;
    unsigned cp = 0, min = 0;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2, cp = b0 & 0x1F, min = 0x80;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3, cp = b0 & 0x0F, min = 0x800;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4, cp = b0 & 0x07, min = 0x10000;
    } else {
      fail("invalid UTF-8 in a string");
    }
    if (pos_ + len > s_.size()) fail("truncated UTF-8 sequence in a string");
    for (int k = 1; k < len; ++k) {
      const unsigned char b = static_cast<unsigned char>(s_[pos_ + k]);
      if ((b & 0xC0) != 0x80) fail("invalid UTF-8 in a string");
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) fail("invalid UTF-8 in a string");
    out.append(s_, pos_, len);
    pos_ += len;
  }

  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) fail("unterminated string");
      const char c = s_[pos_];
      if (c == '"') {
        ++pos_;
        break;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail("unescaped control character in a string");
      if (static_cast<unsigned char>(c) >= 0x80) {
        utf8_sequence(out);
        continue;
      }
      ++pos_;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) fail("unterminated escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("\\u escape is a lone low surrogate");
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // a UTF-16 pair: the low half must follow
            if (!literal("\\u")) fail("\\u escape is a high surrogate without its low half");
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("\\u escape is a high surrogate without its low half");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: fail("bad escape '\\" + printable(e) + "'");
      }
    }
    return out;
  }

  const std::string& s_;
  std::string what_;
  std::size_t pos_ = 0;
  std::size_t values_ = 0;
};

}  // namespace

Value parse(const std::string& text, const std::string& what) { return Parser(text, what).document(); }

}  // namespace flashkernel::models::json
