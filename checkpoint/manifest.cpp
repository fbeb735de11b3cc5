// manifest.json: the one file that says a checkpoint is complete and what is in it.
#include <algorithm>
#include <stdexcept>

#include "checkpoint/checkpoint.h"
#include "checkpoint/mini_json.h"
#include "checkpoint/shard_io.h"

namespace sy {

namespace {

std::string shape_json(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

std::string Manifest::to_json() const {
  // One piece per line: a manifest of 10^5 pieces stays greppable and diffable.
  std::string o = "{\n  \"format\": \"switchyard-checkpoint\",\n";
  o += "  \"format_version\": " + std::to_string(format_version) + ",\n";
  o += "  \"step\": " + std::to_string(step) + ",\n";
  o += "  \"world_size\": " + std::to_string(world_size) + ",\n";
  o += "  \"attrs\": {";
  bool first = true;
  for (const auto& [k, v] : attrs) {
    o += std::string(first ? "\n" : ",\n") + "    " + json::quote(k) + ": " + json::quote(v);
    first = false;
  }
  o += attrs.empty() ? "},\n" : "\n  },\n";
  o += "  \"files\": [";
  for (size_t i = 0; i < files.size(); ++i) o += (i ? ", " : "") + json::quote(files[i]);
  o += "],\n  \"tensors\": [";
  for (size_t t = 0; t < tensors.size(); ++t) {
    const TensorRecord& r = tensors[t];
    o += std::string(t ? ",\n" : "\n") + "    {\"name\": " + json::quote(r.name) + ", \"dtype\": \"" +
         dtype_name(r.dtype) + "\", \"shape\": " + shape_json(r.shape) + ", \"pieces\": [";
    for (size_t i = 0; i < r.pieces.size(); ++i) {
      const PieceRecord& p = r.pieces[i];
      o += std::string(i ? ",\n" : "\n") + "      {\"file\": " + json::quote(p.file) +
           ", \"dataset\": " + json::quote(p.dataset) + ", \"offset\": " + std::to_string(p.offset) +
           ", \"count\": " + std::to_string(p.count) + ", \"crc32c\": " + std::to_string(p.crc32c) + "}";
    }
    o += "]}";
  }
  o += tensors.empty() ? "]\n}\n" : "\n  ]\n}\n";
  return o;
}

Manifest Manifest::from_json(const std::string& text) {
  const json::Value doc = json::parse(text);
  if (doc.at("format").as_string("format") != "switchyard-checkpoint")
    throw std::runtime_error("not a switchyard checkpoint manifest");
  Manifest m;
  m.format_version = doc.at("format_version").as_int("format_version");
  if (m.format_version != 1)
    throw std::runtime_error("format_version " + std::to_string(m.format_version) +
                             " is not supported by this build (it reads version 1)");
  m.step = doc.at("step").as_int("step");
  m.world_size = doc.at("world_size").as_int("world_size");
  const json::Value& attrs = doc.at("attrs");
  if (attrs.kind != json::Value::Kind::Object) throw std::runtime_error("attrs is not an object");
  for (const auto& [k, v] : attrs.members) m.attrs[k] = v.as_string("attrs." + k);
  for (const json::Value& f : doc.at("files").as_array("files")) m.files.push_back(f.as_string("files[]"));
  for (const json::Value& t : doc.at("tensors").as_array("tensors")) {
    TensorRecord r;
    r.name = t.at("name").as_string("tensor name");
    const std::string where = "tensor " + r.name + ": ";
    try {
      r.dtype = dtype_from_name(t.at("dtype").as_string("dtype"));
      for (const json::Value& d : t.at("shape").as_array("shape")) {
        r.shape.push_back(d.as_int("shape[]"));
        if (r.shape.back() < 0) throw std::runtime_error("negative dimension");
      }
      for (const json::Value& p : t.at("pieces").as_array("pieces")) {
        PieceRecord pr;
        pr.file = p.at("file").as_string("file");
        // A manifest must not send a reader outside its own directory.
        if (pr.file.find('/') != std::string::npos || pr.file.empty() || pr.file[0] == '.')
          throw std::runtime_error("bad file name \"" + pr.file + "\"");
        pr.dataset = p.at("dataset").as_string("dataset");
        pr.offset = p.at("offset").as_int("offset");
        pr.count = p.at("count").as_int("count");
        const int64_t crc = p.at("crc32c").as_int("crc32c");
        if (crc < 0 || crc > 0xFFFFFFFFll) throw std::runtime_error("crc32c out of range");
        pr.crc32c = static_cast<uint32_t>(crc);
        r.pieces.push_back(std::move(pr));
      }
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(where + e.what());
    }
    std::sort(r.pieces.begin(), r.pieces.end(),
              [](const PieceRecord& a, const PieceRecord& b) { return a.offset < b.offset; });
    m.tensors.push_back(std::move(r));
  }
  std::sort(m.tensors.begin(), m.tensors.end(),
            [](const TensorRecord& a, const TensorRecord& b) { return a.name < b.name; });
  return m;
}

}  // namespace sy

namespace sy {

std::vector<std::string> audit_manifest(const Manifest& m) {
  std::vector<std::string> problems;
  for (const TensorRecord& t : m.tensors) {
    const int64_t numel = shape_numel(t.shape);
    const std::string who = "tensor " + t.name + ": ";
    int64_t next = 0, total = 0;  // pieces are sorted by offset: each must start where the last ended
    for (const PieceRecord& p : t.pieces) {
      if (std::find(m.files.begin(), m.files.end(), p.file) == m.files.end())
        problems.push_back(who + "piece in " + p.file + ", which is not one of the checkpoint's files");
      if (p.count < 0 || p.offset < 0 || p.offset + p.count > numel) {
        problems.push_back(who + "piece [" + std::to_string(p.offset) + ", " + std::to_string(p.offset + p.count) +
                           ") in " + p.file + " lies outside the tensor's " + std::to_string(numel) + " elements");
        continue;
      }
      if (p.offset < next)
        problems.push_back(who + "pieces overlap at elements [" + std::to_string(p.offset) + ", " +
                           std::to_string(std::min(next, p.offset + p.count)) + ") (" + p.file + ")");
      else if (p.offset > next)
        problems.push_back(who + "elements [" + std::to_string(next) + ", " + std::to_string(p.offset) +
                           ") are in no piece");
      next = std::max(next, p.offset + p.count);
      total += p.count;
    }
    if (next < numel)
      problems.push_back(who + "elements [" + std::to_string(next) + ", " + std::to_string(numel) + ") are in no piece");
    if (total != numel)
      problems.push_back(who + "pieces hold " + std::to_string(total) + " elements, the global shape " +
                         shape_str(t.shape) + " has " + std::to_string(numel));
  }
  return problems;
}

}  // namespace sy
