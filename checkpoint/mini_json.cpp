#include "checkpoint/mini_json.h"

#include <cstdio>
#include <stdexcept>

namespace sy::json {

namespace {

class Parser {
 public:
  explicit Parser(const std::string& t) : t_(t) {}

  Value document() {
    Value v = value(0);
    skip_ws();
    if (i_ != t_.size()) fail("trailing characters after the document");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw std::runtime_error("JSON error at byte " + std::to_string(i_) + ": " + why);
  }
  void skip_ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\t' || t_[i_] == '\r')) ++i_;
  }
  char peek() {
    skip_ws();
    if (i_ >= t_.size()) fail("unexpected end of document");
    return t_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  bool literal(const char* word) {
    const std::string w = word;
    if (t_.compare(i_, w.size(), w) != 0) return false;
    i_ += w.size();
    return true;
  }

  Value value(int depth) {
    // The manifest nests 4 deep; a bound keeps a hostile file from exhausting the stack.
    if (depth > 64) fail("nesting deeper than 64");
    Value v;
    const char c = peek();
    if (c == '{') {
      ++i_;
      if (peek() == '}') return ++i_, v;
      for (;;) {
        if (peek() != '"') fail("expected a member name");
        std::string key = string();
        expect(':');
        v.members.emplace_back(std::move(key), value(depth + 1));
        if (peek() == ',') { ++i_; continue; }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      ++i_;
      v.kind = Value::Kind::Array;
      if (peek() == ']') return ++i_, v;
      for (;;) {
        v.items.push_back(value(depth + 1));
        if (peek() == ',') { ++i_; continue; }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Value::Kind::String;
      v.str = string();
      return v;
    }
    if (literal("true") || literal("false")) {
      v.kind = Value::Kind::Bool;
      v.flag = t_[i_ - 1] == 'e' && t_[i_ - 2] == 'u';
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Value::Kind::Int;
      const size_t start = i_;
      if (t_[i_] == '-') ++i_;
      while (i_ < t_.size() && t_[i_] >= '0' && t_[i_] <= '9') ++i_;
      if (i_ < t_.size() && (t_[i_] == '.' || t_[i_] == 'e' || t_[i_] == 'E')) fail("only integers are allowed");
      try {
        size_t used = 0;
        v.num = std::stoll(t_.substr(start, i_ - start), &used);
      } catch (const std::exception&) {
        fail("bad or out-of-range integer");
      }
      return v;
    }
    fail(std::string("unexpected character '") + c + "'");
  }

  std::string string() {
    ++i_;  // opening quote
    std::string out;
    while (i_ < t_.size() && t_[i_] != '"') {
      char c = t_[i_++];
      if (c != '\\') { out += c; continue; }
      if (i_ >= t_.size()) break;
      c = t_[i_++];
      switch (c) {
        case '"': case '\\': case '/': out += c; break;
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          if (i_ + 4 > t_.size()) fail("short \\u escape");
          const unsigned cp = static_cast<unsigned>(std::stoul(t_.substr(i_, 4), nullptr, 16));
          i_ += 4;
          // quote() only escapes control characters, so the BMP as UTF-8 is all we need.
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: fail(std::string("bad escape \\") + c);
      }
    }
    if (i_ >= t_.size()) fail("unterminated string");
    ++i_;  // closing quote
    return out;
  }

  const std::string& t_;
  size_t i_ = 0;
};

}  // namespace

const Value* Value::find(const std::string& key) const {
  if (kind != Kind::Object) return nullptr;
  for (const auto& [k, v] : members)
    if (k == key) return &v;
  return nullptr;
}

const Value& Value::at(const std::string& key) const {
  const Value* v = find(key);
  if (!v) throw std::runtime_error("missing key \"" + key + "\"");
  return *v;
}

const std::string& Value::as_string(const std::string& what) const {
  if (kind != Kind::String) throw std::runtime_error(what + " is not a string");
  return str;
}

int64_t Value::as_int(const std::string& what) const {
  if (kind != Kind::Int) throw std::runtime_error(what + " is not an integer");
  return num;
}

const std::vector<Value>& Value::as_array(const std::string& what) const {
  if (kind != Kind::Array) throw std::runtime_error(what + " is not an array");
  return items;
}

Value parse(const std::string& text) { return Parser(text).document(); }

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace sy::json
