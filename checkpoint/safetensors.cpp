#include "checkpoint/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "checkpoint/mini_json.h"

namespace sy {

namespace {

const char* safetensors_dtype(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
  }
  return "?";
}

DType dtype_from(const std::string& s, const std::string& where) {
  if (s == "F32") return DType::F32;
  if (s == "F64") return DType::F64;
  if (s == "BF16") return DType::BF16;
  if (s == "I32") return DType::I32;
  throw std::runtime_error(where + ": dtype " + s + " is not read (F32, F64, BF16, I32); convert the model to bf16 or float32");
}

}  // namespace

std::map<std::string, HostArray> read_safetensors(const std::string& path) {
  // The header first, then each tensor's bytes straight from the file into its array: a
  // multi-gigabyte shard is never held twice.
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error(path + ": cannot open");
  const uint64_t file_bytes = uint64_t(in.tellg());
  in.seekg(0);
  uint64_t n = 0;
  if (file_bytes < 8 || !in.read(reinterpret_cast<char*>(&n), 8)) throw std::runtime_error(path + ": truncated (no header length)");
  if (n > file_bytes - 8) throw std::runtime_error(path + ": header of " + std::to_string(n) + " bytes past the file's end");
  std::string header(size_t(n), ' ');
  in.read(header.data(), std::streamsize(n));
  while (!header.empty() && header.back() == ' ') header.pop_back();
  json::Value root;
  try {
    root = json::parse(header);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": header is not the JSON safetensors writes (" + e.what() + ")");
  }
  const uint64_t base = 8 + n, data = file_bytes - base;
  std::map<std::string, HostArray> out;
  for (const auto& [name, v] : root.members) {
    if (name == "__metadata__") continue;
    const std::string where = path + ": " + name;
    HostArray a;
    a.dtype = dtype_from(v.at("dtype").as_string("dtype"), where);
    for (const json::Value& d : v.at("shape").as_array("shape")) a.shape.push_back(d.as_int("shape"));
    const auto& off = v.at("data_offsets").as_array("data_offsets");
    if (off.size() != 2) throw std::runtime_error(where + ": data_offsets needs [begin, end]");
    const int64_t lo = off[0].as_int("begin"), hi = off[1].as_int("end");
    const int64_t want = a.numel() * int64_t(dtype_size(a.dtype));
    if (lo < 0 || hi < lo || uint64_t(hi) > data || hi - lo != want)
      throw std::runtime_error(where + ": data_offsets [" + std::to_string(lo) + ", " + std::to_string(hi) +
                               ") do not hold its " + std::to_string(want) + " bytes inside the " + std::to_string(data) +
                               " data bytes");
    a.bytes.resize(size_t(want));
    in.seekg(std::streamoff(base + uint64_t(lo)));
    if (!in.read(reinterpret_cast<char*>(a.bytes.data()), std::streamsize(want)))
      throw std::runtime_error(where + ": read failed");
    out.emplace(name, std::move(a));
  }
  return out;
}

std::map<std::string, HostArray> read_safetensors_dir(const std::string& dir) {
  std::vector<std::filesystem::path> files;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().extension() == ".safetensors") files.push_back(e.path());
  if (ec) throw std::runtime_error(dir + ": cannot list (" + ec.message() + ")");
  if (files.empty()) throw std::runtime_error(dir + ": no *.safetensors file; point at the model's directory");
  std::map<std::string, HostArray> all;
  for (const auto& f : files)
    for (auto& [name, a] : read_safetensors(f.string()))
      if (!all.emplace(name, std::move(a)).second)
        throw std::runtime_error(f.string() + ": tensor " + name + " is in another shard too");
  return all;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, HostArray>>& arrays,
                       const std::map<std::string, std::string>& metadata) {
  std::string h = "{";
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) h += ',';
      h += json::quote(k);
      h += ':';
      h += json::quote(v);
      first = false;
    }
    h += "},";
  }
  int64_t at = 0;
  for (size_t i = 0; i < arrays.size(); ++i) {
    const auto& [name, a] = arrays[i];
    // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on a sum that starts from a literal.
    if (i) h += ',';
    h += json::quote(name);
    h += ":{\"dtype\":\"";
    h += safetensors_dtype(a.dtype);
    h += "\",\"shape\":[";
    for (size_t d = 0; d < a.shape.size(); ++d) {
      if (d) h += ',';
      h += std::to_string(a.shape[d]);
    }
    h += "],\"data_offsets\":[" + std::to_string(at) + "," + std::to_string(at + int64_t(a.bytes.size())) + "]}";
    at += int64_t(a.bytes.size());
  }
  if (h.back() == ',') h.pop_back();
  h += "}";
  while (h.size() % 8) h += ' ';
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error(path + ": cannot create");
  const uint64_t n = h.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(h.data(), std::streamsize(h.size()));
  for (const auto& [name, a] : arrays) out.write(reinterpret_cast<const char*>(a.bytes.data()), std::streamsize(a.bytes.size()));
  if (!out) throw std::runtime_error(path + ": write failed; check free disk space");
}

}  // namespace sy
