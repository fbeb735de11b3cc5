#include "checkpoint/weights_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <stdexcept>

#include "checkpoint/h5_check.h"
#include "checkpoint/shard_io.h"
#include "engine/config_error.h"

namespace sy {

// ---- error reporting ----------------------------------------------------------------------------

void h5_quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

namespace {

herr_t innermost_desc(unsigned n, const H5E_error2_t* err, void* out) {
  // Walking upward, entry 0 is where the failure started; the outer entries only say which API
  // call it surfaced through, which SY_H5_CHECK already names.
  if (n == 0 && err->desc) *static_cast<std::string*>(out) = err->desc;
  return 0;
}

}  // namespace

// Debian's libhdf5 is built without thread safety: concurrent calls from two threads (a trainer
// exporting weights while an evaluator reads, an async checkpoint writer) would corrupt its global
// state, so every entry point into HDF5 holds this lock.
std::mutex& h5_mutex() {
  static std::mutex m;
  return m;
}

std::string h5_last_error() {
  std::string desc;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_desc, &desc);
  H5Eclear2(H5E_DEFAULT);
  return desc;
}

void h5_fail(const char* expr, const char* file, int line) {
  std::string where = file;
  if (auto slash = where.find_last_of('/'); slash != std::string::npos) where = where.substr(slash + 1);
  std::string msg = "HDF5 call failed at " + where + ":" + std::to_string(line) + ": " + expr;
  const std::string why = h5_last_error();
  if (!why.empty()) msg += " (" + why + ")";
  throw std::runtime_error(msg);
}

namespace {


// Maps a dataset's stored type to an engine dtype. Other types mean the file was not written by
// us (or by the reference script), and guessing a conversion could hide a wrong file.
DType dtype_of_h5(hid_t type, const std::string& name) {
  const H5T_class_t cls = SY_H5_CHECK(H5Tget_class(type));
  const size_t size = H5Tget_size(type);
  if (size == 0) h5_fail("H5Tget_size(type)", __FILE__, __LINE__);
  if (cls == H5T_FLOAT && size == 4) return DType::F32;
  if (cls == H5T_FLOAT && size == 8) return DType::F64;
  if (cls == H5T_INTEGER && size == 4 && SY_H5_CHECK(H5Tget_sign(type)) == H5T_SGN_2) return DType::I32;
  throw std::runtime_error("dataset '" + name + "' has a type other than float32, float64 or int32 (class " +
                           std::to_string(int(cls)) + ", " + std::to_string(size) +
                           " bytes); convert it to one of those");
}

[[noreturn]] void cannot_open(const std::string& path, const std::string& why) {
  throw ConfigError(path + ": cannot open HDF5 weights file (" + why + "); check the path");
}

// Opens an existing weights file read-only, or throws ConfigError saying why not.
hid_t open_for_reading(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) cannot_open(path, "no such file");
  if (std::filesystem::is_directory(path, ec)) cannot_open(path, "it is a directory");
  H5Id fapl(SY_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
  SY_H5_CHECK(H5Pset_file_locking(fapl.get(), false, true));  // see write_weights_h5
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (f >= 0) {
    try {
      fapl.close();
    } catch (...) {
      H5Fclose(f);
      throw;
    }
    return f;
  }
  std::string why = h5_last_error();
  // HDF5's own reason for a foreign file is a signature-search message; say it plainly.
  if (H5Fis_hdf5(path.c_str()) == 0) why = "not an HDF5 file";
  H5Eclear2(H5E_DEFAULT);
  cannot_open(path, why);
}


void write_array(hid_t file, const std::string& name, const HostArray& a) {
  const int64_t n = a.numel();
  if (static_cast<size_t>(n) * dtype_size(a.dtype) != a.bytes.size())
    throw std::invalid_argument("write_weights_h5: array '" + name + "' of shape " + shape_str(a.shape) + " and " +
                                dtype_name(a.dtype) + " holds " + std::to_string(a.bytes.size()) + " bytes");
  std::vector<hsize_t> dims(a.shape.begin(), a.shape.end());
  H5Id space(dims.empty() ? SY_H5_CHECK(H5Screate(H5S_SCALAR))
                          : SY_H5_CHECK(H5Screate_simple(int(dims.size()), dims.data(), nullptr)),
             H5Sclose);
  const H5Types t = h5_types(a.dtype);
  H5Id ds(SY_H5_CHECK(H5Dcreate2(file, name.c_str(), t.file, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
          H5Dclose);
  // An empty selection needs no buffer, and an empty vector may not have one.
  if (n > 0) SY_H5_CHECK(H5Dwrite(ds.get(), t.memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.bytes.data()));
  ds.close();
  space.close();
}

void write_string_attr(hid_t file, const std::string& key, const std::string& value) {
  // Variable-length UTF-8: h5py reads it back as a str (fixed-length comes back as bytes), and the
  // value lives in the global heap, so a long recipe does not hit the 64 KiB object-header limit.
  H5Id type(SY_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
  SY_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
  SY_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  H5Id space(SY_H5_CHECK(H5Screate(H5S_SCALAR)), H5Sclose);
  H5Id attr(SY_H5_CHECK(H5Acreate2(file, key.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT)),
            H5Aclose);
  const char* p = value.c_str();
  SY_H5_CHECK(H5Awrite(attr.get(), type.get(), &p));
  attr.close();
  space.close();
  type.close();
}

HostArray read_array(const std::string& name, hid_t ds) {
  H5Id space(SY_H5_CHECK(H5Dget_space(ds)), H5Sclose);
  const H5S_class_t cls = SY_H5_CHECK(H5Sget_simple_extent_type(space.get()));
  if (cls == H5S_NULL) throw std::runtime_error("dataset '" + name + "' has no dataspace (H5S_NULL)");
  const int rank = SY_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(rank);
  if (rank > 0) SY_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  H5Id ftype(SY_H5_CHECK(H5Dget_type(ds)), H5Tclose);

  HostArray a;
  a.dtype = dtype_of_h5(ftype.get(), name);
  a.shape.assign(dims.begin(), dims.end());
  a.bytes.resize(static_cast<size_t>(a.numel()) * dtype_size(a.dtype));
  if (!a.bytes.empty())
    SY_H5_CHECK(H5Dread(ds, h5_types(a.dtype).memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.bytes.data()));
  ftype.close();
  space.close();
  return a;
}

herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* out) {
  try {
    static_cast<std::vector<std::string>*>(out)->emplace_back(name);
    return 0;
  } catch (...) {
    return -1;  // an exception must not unwind through HDF5's C frames
  }
}

// The attribute's value when it is a single string; false for every other kind of attribute.
bool read_string_attr(hid_t attr, std::string& out) {
  H5Id type(SY_H5_CHECK(H5Aget_type(attr)), H5Tclose);
  if (SY_H5_CHECK(H5Tget_class(type.get())) != H5T_STRING) return false;
  H5Id space(SY_H5_CHECK(H5Aget_space(attr)), H5Sclose);
  if (SY_H5_CHECK(H5Sget_simple_extent_npoints(space.get())) != 1) return false;

  if (SY_H5_CHECK(H5Tis_variable_str(type.get()))) {
    H5Id mem(SY_H5_CHECK(H5Tcopy(H5T_C_S1)), H5Tclose);
    SY_H5_CHECK(H5Tset_size(mem.get(), H5T_VARIABLE));
    SY_H5_CHECK(H5Tset_cset(mem.get(), SY_H5_CHECK(H5Tget_cset(type.get()))));
    char* p = nullptr;
    SY_H5_CHECK(H5Aread(attr, mem.get(), &p));
    out = p ? std::string(p) : std::string();
    if (p) SY_H5_CHECK(H5free_memory(p));
  } else {
    const size_t size = H5Tget_size(type.get());
    if (size == 0) h5_fail("H5Tget_size(type)", __FILE__, __LINE__);
    std::string buf(size, '\0');
    SY_H5_CHECK(H5Aread(attr, type.get(), buf.data()));
    const H5T_str_t pad = SY_H5_CHECK(H5Tget_strpad(type.get()));
    if (pad == H5T_STR_SPACEPAD) {
      buf.erase(buf.find_last_not_of(' ') + 1);
    } else if (auto nul = buf.find('\0'); nul != std::string::npos) {
      buf.resize(nul);
    }
    out = std::move(buf);
  }
  return true;
}

}  // namespace

// ---- HostArray -------------------------------------------------------------------------------

namespace {

template <class T> HostArray make_array(Shape shape, const std::vector<T>& values) {
  HostArray a;
  a.shape = std::move(shape);
  a.dtype = dtype_of<T>();
  if (a.numel() != static_cast<int64_t>(values.size()))
    throw std::invalid_argument("host_array: shape " + shape_str(a.shape) + " needs " + std::to_string(a.numel()) +
                                " values, got " + std::to_string(values.size()));
  a.bytes.resize(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(a.bytes.data(), values.data(), a.bytes.size());
  return a;
}

template <class T> std::vector<double> widen(const HostArray& a) {
  std::vector<T> v = a.values<T>();
  return std::vector<double>(v.begin(), v.end());
}

}  // namespace

template <class T> std::vector<T> HostArray::values() const {
  if (dtype != dtype_of<T>())
    throw std::logic_error(std::string("HostArray::values: array holds ") + dtype_name(dtype) + ", asked for " +
                           dtype_name(dtype_of<T>()));
  if (bytes.size() != static_cast<size_t>(numel()) * sizeof(T))
    throw std::logic_error("HostArray::values: " + std::to_string(bytes.size()) + " bytes do not fit shape " +
                           shape_str(shape));
  std::vector<T> v(bytes.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

template std::vector<float> HostArray::values<float>() const;
template std::vector<double> HostArray::values<double>() const;
template std::vector<int32_t> HostArray::values<int32_t>() const;

std::vector<double> HostArray::to_f64() const {
  switch (dtype) {
    case DType::F32: return widen<float>(*this);
    case DType::F64: return values<double>();
    case DType::I32: return widen<int32_t>(*this);
    case DType::BF16: {
      std::vector<double> out(bytes.size() / 2);
      for (size_t i = 0; i < out.size(); ++i) {
        uint16_t b;
        std::memcpy(&b, bytes.data() + 2 * i, 2);
        out[i] = bf16_bits_to_f32(b);
      }
      return out;
    }
  }
  throw std::logic_error("HostArray::to_f64: unknown dtype");
}

HostArray host_array(Shape shape, const std::vector<float>& values) { return make_array(std::move(shape), values); }
HostArray host_array(Shape shape, const std::vector<double>& values) { return make_array(std::move(shape), values); }
HostArray host_array(Shape shape, const std::vector<int32_t>& values) { return make_array(std::move(shape), values); }

HostArray download_array(Backend& be, const Tensor& t) {
  HostArray a;
  a.shape = t.shape();
  a.dtype = t.dtype();
  a.bytes.resize(t.nbytes());
  if (!a.bytes.empty()) be.download(t, a.bytes.data());
  return a;
}

void upload_array(Backend& be, const HostArray& a, const Tensor& t) {
  if (a.shape != t.shape())
    throw std::invalid_argument("upload_array: array of shape " + shape_str(a.shape) + " into a tensor of shape " +
                                shape_str(t.shape()));
  if (a.numel() == 0) return;
  if (a.dtype == t.dtype()) {
    if (a.bytes.size() != t.nbytes()) throw std::invalid_argument("upload_array: byte count does not match shape");
    be.upload(a.bytes.data(), t);
    return;
  }
  const bool floats = a.dtype != DType::I32 && t.dtype() != DType::I32;
  if (!floats)
    throw std::invalid_argument(std::string("upload_array: cannot load ") + dtype_name(a.dtype) + " into a " +
                                dtype_name(t.dtype()) + " tensor");
  if (t.dtype() == DType::F64) {
    be.upload(a.to_f64().data(), t);
  } else {
    const std::vector<double> d = a.to_f64();
    const std::vector<float> f(d.begin(), d.end());
    be.upload(f.data(), t);
  }
}

// ---- files ----------------------------------------------------------------------------------

void write_weights_h5(const std::string& path, const std::vector<std::pair<std::string, HostArray>>& arrays,
                      const std::map<std::string, std::string>& attrs) {
  std::set<std::string> seen;
  for (const auto& [name, a] : arrays) {
    // '/' would silently create groups, and '.' alone names the root itself.
    if (name.empty() || name == "." || name.find('/') != std::string::npos)
      throw std::invalid_argument("write_weights_h5: invalid dataset name '" + name + "'");
    if (!seen.insert(name).second) throw std::invalid_argument("write_weights_h5: duplicate dataset '" + name + "'");
  }

  std::lock_guard lock(h5_mutex());
  h5_quiet();
  const std::string tmp = path + ".tmp";
  try {
    {
      // No HDF5 advisory locks: a weights file is never modified in place, so they protect
      // nothing, and on filesystems without lock support (NFS, Lustre) they fail every open.
      H5Id fapl(SY_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
      SY_H5_CHECK(H5Pset_file_locking(fapl.get(), false, true));
      H5Id file(SY_H5_CHECK(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get())), H5Fclose);
      for (const auto& [name, a] : arrays) write_array(file.get(), name, a);
      for (const auto& [key, value] : attrs) write_string_attr(file.get(), key, value);
      file.close();
      fapl.close();
    }
    fsync_file(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + std::strerror(errno));
    // The rename itself is only durable once the directory entry is on disk.
    std::filesystem::path dir = std::filesystem::path(path).parent_path();
    fsync_dir(dir.empty() ? std::string(".") : dir.string());
  } catch (const std::invalid_argument&) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  } catch (const std::exception& e) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw std::runtime_error(path + ": writing weights failed: " + e.what());
  }
}

std::map<std::string, HostArray> read_weights_h5(const std::string& path) {
  std::lock_guard lock(h5_mutex());
  h5_quiet();
  H5Id file(open_for_reading(path), H5Fclose);
  try {
    std::map<std::string, HostArray> out;
    H5Id root(SY_H5_CHECK(H5Gopen2(file.get(), "/", H5P_DEFAULT)), H5Gclose);
    H5G_info_t info;
    SY_H5_CHECK(H5Gget_info(root.get(), &info));
    for (hsize_t i = 0; i < info.nlinks; ++i) {
      const ssize_t len =
          SY_H5_CHECK(H5Lget_name_by_idx(root.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT));
      std::string name(static_cast<size_t>(len) + 1, '\0');
      SY_H5_CHECK(
          H5Lget_name_by_idx(root.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT));
      name.resize(static_cast<size_t>(len));
      H5Id obj(SY_H5_CHECK(H5Oopen(root.get(), name.c_str(), H5P_DEFAULT)), H5Oclose);
      // Groups (another tool's metadata, a future optimizer-state group) are not weights.
      if (SY_H5_CHECK(H5Iget_type(obj.get())) != H5I_DATASET) continue;
      out.emplace(name, read_array(name, obj.get()));
      obj.close();
    }
    root.close();
    file.close();
    return out;
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": reading weights failed: " + e.what());
  }
}

std::map<std::string, std::string> read_attrs_h5(const std::string& path) {
  std::lock_guard lock(h5_mutex());
  h5_quiet();
  H5Id file(open_for_reading(path), H5Fclose);
  try {
    std::vector<std::string> names;
    SY_H5_CHECK(H5Aiterate2(file.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_attr_name, &names));
    std::map<std::string, std::string> out;
    for (const std::string& name : names) {
      H5Id attr(SY_H5_CHECK(H5Aopen(file.get(), name.c_str(), H5P_DEFAULT)), H5Aclose);
      std::string value;
      if (read_string_attr(attr.get(), value)) out.emplace(name, std::move(value));
      attr.close();
    }
    file.close();
    return out;
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": reading attributes failed: " + e.what());
  }
}

}  // namespace sy
