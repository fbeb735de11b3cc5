// The small JSON subset the checkpoint manifest needs: objects, arrays, strings, integers,
// booleans. The project has no JSON dependency and the manifest is the only JSON it reads, so a
// strict ~150-line parser is cheaper than a new package; anything outside the subset (floats,
// null, trailing garbage) is rejected as a damaged manifest rather than guessed at.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sy::json {

struct Value {
  enum class Kind { Object, Array, String, Int, Bool } kind = Kind::Object;
  std::string str;
  int64_t num = 0;
  bool flag = false;
  std::vector<Value> items;                            // Array
  std::vector<std::pair<std::string, Value>> members;  // Object, in file order

  // Member lookups that throw std::runtime_error naming the key when it is missing or of
  // another kind, so a damaged manifest reads as one precise line.
  const Value& at(const std::string& key) const;
  const Value* find(const std::string& key) const;
  const std::string& as_string(const std::string& what) const;
  int64_t as_int(const std::string& what) const;
  const std::vector<Value>& as_array(const std::string& what) const;
};

// Parses a whole document; throws std::runtime_error with the byte offset of the first problem.
Value parse(const std::string& text);

// `s` as a JSON string literal, quotes included (control characters as \u00XX).
std::string quote(const std::string& s);

}  // namespace sy::json
