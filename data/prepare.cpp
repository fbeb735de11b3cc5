#include "data/prepare.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "data/token_file.h"
#include "engine/config_error.h"

namespace sy {

namespace fs = std::filesystem;

namespace {

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw ConfigError(path + ": no such text file; check the path given to --text");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot read; check its permissions");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

// Splits `text` into records, each returned with its separator appended, so that concatenating
// the records of a split gives back a well-formed file of the same kind.
std::vector<std::string> split_records(const std::string& text) {
  std::vector<std::string> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  auto is_percent = [](const std::string& l) { return l == "%" || l == "%\r"; };
  const bool percent_mode = std::any_of(lines.begin(), lines.end(), is_percent);
  auto is_sep = [&](const std::string& l) { return percent_mode ? is_percent(l) : is_blank(l); };
  const std::string sep = percent_mode ? "%\n" : "\n";

  std::vector<std::string> records;
  std::string cur;
  auto flush = [&] {
    if (!is_blank(cur)) records.push_back(cur + sep);
    cur.clear();
  };
  for (const std::string& l : lines) {
    if (is_sep(l)) {
      flush();
    } else {
      cur += l;
      cur += '\n';
    }
  }
  flush();
  return records;
}

void append_bytes(std::vector<uint32_t>& out, const std::string& s) {
  for (unsigned char c : s) out.push_back(c);
}

}  // namespace

PrepareStats prepare_text_files(const std::vector<std::string>& inputs, const std::string& out_prefix,
                                int64_t val_every) {
  if (inputs.empty()) throw ConfigError("no input text files; pass at least one with --text FILE");
  if (val_every < 2)
    throw ConfigError("--val-every=" + std::to_string(val_every) + " must be at least 2 (every N-th record is validation)");
  if (out_prefix.empty()) throw ConfigError("--out is empty; give an output prefix such as data/fortunes");

  PrepareStats st;
  std::vector<uint32_t> train, val;
  int64_t record_index = 0;
  for (const std::string& path : inputs) {
    for (const std::string& rec : split_records(read_file(path))) {
      // The (val_every)-th, (2*val_every)-th, ... record: deterministic and spread over every file.
      if (++record_index % val_every == 0) {
        append_bytes(val, rec);
        ++st.val_records;
      } else {
        append_bytes(train, rec);
        ++st.train_records;
      }
    }
    ++st.files;
  }
  if (st.val_records == 0)
    throw ConfigError("only " + std::to_string(st.train_records) + " records in the input, too few for one validation record (every " +
                      std::to_string(val_every) + "th); add text or lower --val-every");

  const fs::path parent = fs::path(out_prefix).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) throw ConfigError(parent.string() + ": cannot create output directory (" + ec.message() + "); choose another --out");
  }
  st.train_path = out_prefix + ".train.tok";
  st.val_path = out_prefix + ".val.tok";
  write_token_file(st.train_path, train, 256, 2);
  write_token_file(st.val_path, val, 256, 2);
  st.train_tokens = int64_t(train.size());
  st.val_tokens = int64_t(val.size());
  std::printf("%s: %lld tokens (%lld records)\n%s: %lld tokens (%lld records)\n", st.train_path.c_str(),
              (long long)st.train_tokens, (long long)st.train_records, st.val_path.c_str(), (long long)st.val_tokens,
              (long long)st.val_records);
  return st;
}

PrepareStats prepare_fortunes(const std::string& out_prefix, const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw ConfigError(dir + ": no fortune files; install Debian's `fortunes` package (apt-get install fortunes) "
                      "or use `switchyard data prepare --text FILE...`");
  std::vector<std::string> files;
  for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
    // The *.u8 names are symlinks to the same files and *.dat are strfile indexes, not text.
    if (e.is_symlink() || !e.is_regular_file()) continue;
    const std::string ext = e.path().extension().string();
    if (ext == ".dat" || ext == ".u8") continue;
    files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  if (files.empty())
    throw ConfigError(dir + ": no fortune files found; install Debian's `fortunes` package (apt-get install fortunes)");
  return prepare_text_files(files, out_prefix, 20);
}

}  // namespace sy
