#include "checkpoint/shard_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>

#include "checkpoint/crc32c.h"
#include "checkpoint/h5_check.h"

namespace sy {

namespace {


void fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) throw std::runtime_error(path + ": cannot open for fsync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw std::runtime_error(path + ": fsync failed: " + std::strerror(err));
}

}  // namespace

void fsync_file(const std::string& path) { fsync_path(path, O_RDONLY); }
void fsync_dir(const std::string& path) { fsync_path(path, O_RDONLY | O_DIRECTORY); }

DType dtype_from_name(const std::string& s) {
  for (DType d : {DType::F32, DType::F64, DType::I32})
    if (s == dtype_name(d)) return d;
  throw std::runtime_error("unknown dtype \"" + s + "\"");
}

std::string piece_dataset_name(const TensorPiece& p) {
  if (p.offset == 0 && p.count == shape_numel(p.global_shape)) return p.name;
  return p.name + "@" + std::to_string(p.offset);
}

std::vector<PieceRecord> write_shard_file(const std::string& path, const std::string& file_name,
                                          const std::vector<TensorPiece>& pieces,
                                          const std::function<void(size_t)>& before_piece) {
  std::vector<PieceRecord> records;
  try {
    std::lock_guard lock(h5_mutex());
    h5_quiet();
    H5Id fapl(SY_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
    SY_H5_CHECK(H5Pset_file_locking(fapl.get(), false, true));  // see read_piece_bytes
    // EXCL: the tmp directory is fresh, so an existing file means two ranks share a rank number.
    H5Id file(SY_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get())), H5Fclose);
    for (size_t i = 0; i < pieces.size(); ++i) {
      const TensorPiece& p = pieces[i];
      if (before_piece) before_piece(i);
      const bool whole = p.offset == 0 && p.count == shape_numel(p.global_shape);
      std::vector<hsize_t> dims = whole ? std::vector<hsize_t>(p.global_shape.begin(), p.global_shape.end())
                                        : std::vector<hsize_t>{static_cast<hsize_t>(p.count)};
      H5Id space(dims.empty() ? SY_H5_CHECK(H5Screate(H5S_SCALAR))
                              : SY_H5_CHECK(H5Screate_simple(int(dims.size()), dims.data(), nullptr)),
                 H5Sclose);
      const H5Types t = h5_types(p.dtype);
      const std::string ds_name = piece_dataset_name(p);
      H5Id ds(SY_H5_CHECK(H5Dcreate2(file.get(), ds_name.c_str(), t.file, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                                     H5P_DEFAULT)),
              H5Dclose);
      if (p.count > 0) SY_H5_CHECK(H5Dwrite(ds.get(), t.memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data));
      ds.close();
      space.close();
      const size_t nbytes = static_cast<size_t>(p.count) * dtype_size(p.dtype);
      records.push_back({file_name, ds_name, p.offset, p.count, crc32c(p.data, nbytes)});
      // Give the fault injection a file with data in it, as a real crash mid-write would leave.
      SY_H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_LOCAL));
    }
    if (before_piece) before_piece(pieces.size());
    file.close();
    fapl.close();
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  fsync_file(path);
  return records;
}

std::vector<std::byte> read_piece_bytes(const std::string& path, const std::string& dataset, DType dtype,
                                        int64_t count) {
  std::lock_guard lock(h5_mutex());
  h5_quiet();
  H5Id fapl(SY_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS)), H5Pclose);
  // No advisory locks: shard files are never modified once written, and network filesystems
  // without lock support would fail every open.
  SY_H5_CHECK(H5Pset_file_locking(fapl.get(), false, true));
  H5Id file(SY_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get())), H5Fclose);
  H5Id ds(SY_H5_CHECK(H5Dopen2(file.get(), dataset.c_str(), H5P_DEFAULT)), H5Dclose);
  H5Id space(SY_H5_CHECK(H5Dget_space(ds.get())), H5Sclose);
  const hssize_t n = SY_H5_CHECK(H5Sget_simple_extent_npoints(space.get()));
  if (n != count)
    throw std::runtime_error("dataset '" + dataset + "' holds " + std::to_string(n) + " elements, the manifest says " +
                             std::to_string(count));
  H5Id ftype(SY_H5_CHECK(H5Dget_type(ds.get())), H5Tclose);
  const H5Types t = h5_types(dtype);
  if (SY_H5_CHECK(H5Tequal(ftype.get(), t.file)) <= 0)
    throw std::runtime_error("dataset '" + dataset + "' is not stored as " + dtype_name(dtype));
  std::vector<std::byte> bytes(static_cast<size_t>(count) * dtype_size(dtype));
  if (count > 0) SY_H5_CHECK(H5Dread(ds.get(), t.memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()));
  ftype.close();
  space.close();
  ds.close();
  file.close();
  fapl.close();
  return bytes;
}

}  // namespace sy
