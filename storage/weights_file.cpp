// Native weights file (weights.tdw): writer, strict reader, CRC32C and the weights digest.
//
// Format version 1. All integers are little-endian; there is no implicit padding inside the header.
//
//   offset 0   8 bytes  magic "TANDEMW\0"
//          8   u32      format_version (= 1)
//         12   u32      tensor_count
//         16   u64      table_bytes: size of the tensor table that follows
//         24   table    tensor_count entries, packed back to back:
//                         u16   name_len (1..1024)
//                         bytes name (UTF-8 without control characters; unique within the file)
//                         u8    dtype (1 = float32, DType::F32; the only dtype of version 1)
//                         u8    rank (0..8)
//                         u64   dims[rank] (each <= INT64_MAX)
//                         u64   offset of the data from the start of the file (a multiple of 64)
//                         u64   byte_size (= product(dims) * 4)
//                         u32   crc32c of the data bytes
//   24 + table_bytes   u32  crc32c of every byte before it (magic .. end of table)
//   data: each tensor's float32 values, little-endian, at its offset. The writer places tensors in
//         table order, each at the next 64-byte boundary, and zero-fills the gaps.
//
// The reader trusts nothing: it checks the magic, the version, the table CRC, every field of every
// entry, that data regions lie after the header, inside the file and do not overlap, that every byte
// outside the header and the data regions is zero padding, that the file ends exactly where the last
// region ends (no trailing bytes), and every tensor's CRC. So any single flipped bit anywhere in the
// file, and any truncation, is reported as Error(Data) instead of silently loading wrong weights.
// CRC32C: engine/checksum.h.
#include "storage/weights_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>

#include "engine/errors.h"
#include "storage/posix_file.h"
#include "storage/raw_bytes.h"

namespace tandem {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "weights files hold raw little-endian float32 data; big-endian hosts need byte swapping here");
static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559, "float must be IEEE-754 binary32");

constexpr char kMagic[8] = {'T', 'A', 'N', 'D', 'E', 'M', 'W', '\0'};
constexpr uint32_t kFormatVersion = 1;
constexpr uint64_t kAlignment = 64;
constexpr size_t kMaxNameBytes = 1024;
constexpr size_t kMaxRank = 8;
constexpr uint64_t kFixedHeaderBytes = 24;  // magic, format_version, tensor_count, table_bytes
constexpr uint64_t kTableCrcBytes = 4;
// Smallest table entry: name_len, a 1-byte name, dtype, rank 0, offset, byte_size, crc.
constexpr uint64_t kMinEntryBytes = 2 + 1 + 1 + 1 + 8 + 8 + 4;
constexpr const char* kCorruptHint = "the file is damaged; re-export the model or restore it from a backup";

inline uint32_t load_le32(const unsigned char* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// ---- little-endian encoding --------------------------------------------------------------------

class ByteWriter {
 public:
  void u8(uint8_t v) { buf_.push_back(static_cast<char>(v)); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void bytes(const std::string& s) { buf_ += s; }
  const std::string& str() const { return buf_; }

 private:
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) buf_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string buf_;
};

// Reads fields of the tensor table; running past its end is a Data error naming the byte offset.
class TableReader {
 public:
  TableReader(const std::string& path, const unsigned char* data, uint64_t size, uint64_t base)
      : path_(path), data_(data), size_(size), base_(base) {}
  uint8_t u8(const char* what) { return static_cast<uint8_t>(get(1, what)); }
  uint16_t u16(const char* what) { return static_cast<uint16_t>(get(2, what)); }
  uint32_t u32(const char* what) { return static_cast<uint32_t>(get(4, what)); }
  uint64_t u64(const char* what) { return get(8, what); }
  std::string bytes(uint64_t n, const char* what) {
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  uint64_t pos() const { return pos_; }
  uint64_t file_offset() const { return base_ + pos_; }

 private:
  void need(uint64_t n, const char* what) {
    if (n > size_ - pos_)
      throw_data(path_ + ": the tensor table is inconsistent: " + what + " at byte " + std::to_string(file_offset()) +
                     " runs past the end of the table",
                 kCorruptHint);
  }
  uint64_t get(int n, const char* what) {
    need(static_cast<uint64_t>(n), what);
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t(data_[pos_ + i]) << (8 * i);
    pos_ += static_cast<uint64_t>(n);
    return v;
  }
  const std::string& path_;
  const unsigned char* data_;
  uint64_t size_;
  uint64_t base_;  // file offset of data_[0], for messages
  uint64_t pos_ = 0;
};

// ---- validation helpers ------------------------------------------------------------------------

// Well-formed UTF-8 (no overlong forms, no surrogates, <= U+10FFFF) without ASCII control characters,
// so that names can go into JSON and error messages as they are.
bool is_valid_name(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x20 || c == 0x7F) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    static constexpr uint32_t kMinForLen[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLen[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

// product(dims) * sizeof(float), or false on overflow.
bool byte_size_of(const std::vector<uint64_t>& dims, uint64_t* bytes) {
  uint64_t n = 1;
  for (uint64_t d : dims)
    if (__builtin_mul_overflow(n, d, &n)) return false;
  return !__builtin_mul_overflow(n, uint64_t{4}, bytes);
}

uint64_t align_up(uint64_t v) { return (v + kAlignment - 1) / kAlignment * kAlignment; }

// 'name' for messages; invalid names are shown with \xNN escapes.
std::string quoted_name(const std::string& name) { return "'" + (is_valid_name(name) ? name : printable(name)) + "'"; }

// ---- POSIX file helpers ------------------------------------------------------------------------

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      throw_io("cannot write weights file '" + path + "': " + errno_text(err),
               "check free disk space and permissions of the output directory");
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void write_zeros(int fd, uint64_t count, const std::string& path) {
  static const char kZeros[kAlignment] = {};
  while (count > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(count, kAlignment));
    write_all(fd, kZeros, n, path);
    count -= n;
  }
}

// Reads exactly `size` bytes at `offset`; the caller has checked the range against the file size,
// so a short read means the file shrank while being read.
void read_at(int fd, void* data, size_t size, uint64_t offset, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::pread(fd, p, std::min<size_t>(size, size_t{1} << 30), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      throw_io("cannot read weights file '" + path + "': " + errno_text(err), "check the file and its permissions");
    }
    if (n == 0)
      throw_data(path + " is truncated: it ended at byte " + std::to_string(offset) + " while being read",
                 "was it still being written? re-export the model or restore it from a backup");
    p += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

[[noreturn]] void throw_truncated(const std::string& path, uint64_t file_size, const std::string& what) {
  throw_data(path + " is truncated: " + what + " but the file has only " + std::to_string(file_size) + " bytes",
             "was the copy or download interrupted? re-export the model or restore it from a backup");
}

struct TableEntry {
  std::string name;
  std::vector<uint64_t> dims;
  uint64_t offset = 0;
  uint64_t byte_size = 0;
  uint32_t crc = 0;
};

// Validates what the caller passes to the writer; returns each tensor's byte size.
std::vector<uint64_t> check_tensors_for_writing(const std::string& path, const std::vector<NamedTensor>& tensors) {
  if (tensors.size() > std::numeric_limits<uint32_t>::max())
    throw_invalid("cannot write " + path + ": too many tensors (" + std::to_string(tensors.size()) + ")");
  std::unordered_set<std::string> seen;
  std::vector<uint64_t> sizes;
  sizes.reserve(tensors.size());
  for (const NamedTensor& t : tensors) {
    const std::string where = "tensor " + quoted_name(t.name) + " for " + path;
    if (t.name.empty() || t.name.size() > kMaxNameBytes)
      throw_invalid("cannot write " + where + ": names must have 1.." + std::to_string(kMaxNameBytes) + " bytes",
                    "give every weight a non-empty, reasonably short name such as 'dense_1/kernel'");
    if (!is_valid_name(t.name))
      throw_invalid("cannot write " + where + ": the name is not valid UTF-8 or contains a control character",
                    "use printable UTF-8 names such as 'dense_1/kernel'");
    if (!seen.insert(t.name).second)
      throw_invalid("cannot write " + path + ": two tensors are named " + quoted_name(t.name),
                    "tensor names must be unique");
    if (t.shape.rank() > kMaxRank)
      throw_invalid("cannot write " + where + ": rank " + std::to_string(t.shape.rank()) + " exceeds the maximum of " +
                    std::to_string(kMaxRank));
    std::vector<uint64_t> dims;
    for (int64_t d : t.shape.dims) {
      if (d < 0)
        throw_invalid("cannot write " + where + ": shape " + t.shape.str() + " has an unknown or negative dimension",
                      "weights must have fully known shapes");
      dims.push_back(static_cast<uint64_t>(d));
    }
    uint64_t bytes = 0;
    if (!byte_size_of(dims, &bytes) || bytes / 4 != t.values.size())
      throw_invalid("cannot write " + where + ": shape " + t.shape.str() + " does not match its " +
                        std::to_string(t.values.size()) + " values",
                    "this is a bug in the caller: values must hold shape.numel() floats");
    sizes.push_back(bytes);
  }
  return sizes;
}

}  // namespace

void write_weights_file(const std::string& path, const std::vector<NamedTensor>& tensors) {
  const std::vector<uint64_t> sizes = check_tensors_for_writing(path, tensors);

  // The table has a fixed size given the names and ranks, so offsets can be laid out before it is encoded.
  uint64_t table_bytes = 0;
  for (const NamedTensor& t : tensors) table_bytes += 2 + t.name.size() + 1 + 1 + 8 * t.shape.rank() + 8 + 8 + 4;
  const uint64_t header_end = kFixedHeaderBytes + table_bytes + kTableCrcBytes;

  ByteWriter header;
  header.bytes(std::string(kMagic, sizeof(kMagic)));
  header.u32(kFormatVersion);
  header.u32(static_cast<uint32_t>(tensors.size()));
  header.u64(table_bytes);
  std::vector<uint64_t> offsets;
  uint64_t pos = header_end;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedTensor& t = tensors[i];
    const uint64_t offset = align_up(pos);
    offsets.push_back(offset);
    pos = offset + sizes[i];
    header.u16(static_cast<uint16_t>(t.name.size()));
    header.bytes(t.name);
    header.u8(static_cast<uint8_t>(DType::F32));
    header.u8(static_cast<uint8_t>(t.shape.rank()));
    for (int64_t d : t.shape.dims) header.u64(static_cast<uint64_t>(d));
    header.u64(offset);
    header.u64(sizes[i]);
    header.u32(crc32c(t.values.data(), sizes[i]));
  }
  TANDEM_ASSERT(header.str().size() == kFixedHeaderBytes + table_bytes);
  header.u32(crc32c(header.str().data(), header.str().size()));

  FileDescriptor fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (fd.get() < 0) {
    const int err = errno;
    throw_io("cannot create weights file '" + path + "': " + errno_text(err),
             "check that the directory exists and is writable");
  }
  try {
    write_all(fd.get(), header.str().data(), header.str().size(), path);
    pos = header_end;
    for (size_t i = 0; i < tensors.size(); ++i) {
      write_zeros(fd.get(), offsets[i] - pos, path);
      write_all(fd.get(), tensors[i].values.data(), sizes[i], path);
      pos = offsets[i] + sizes[i];
    }
    if (::fsync(fd.get()) != 0) {
      const int err = errno;
      throw_io("cannot flush weights file '" + path + "' to disk: " + errno_text(err),
               "check free disk space and the health of the file system");
    }
    if (::close(fd.release()) != 0) {
      const int err = errno;
      throw_io("cannot close weights file '" + path + "': " + errno_text(err),
               "check free disk space and the health of the file system");
    }
  } catch (...) {
    ::unlink(path.c_str());  // never leave a half-written file that looks like a weights file
    throw;
  }
}

std::vector<NamedTensor> read_weights_file(const std::string& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    throw_io("cannot open weights file '" + path + "': " + errno_text(err),
             err == ENOENT ? "check the path: a model version directory holds weights.tdw next to model.json"
                           : "check the file's permissions");
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    const int err = errno;
    throw_io("cannot stat weights file '" + path + "': " + errno_text(err), "check the file's permissions");
  }
  if (!S_ISREG(st.st_mode)) throw_io("'" + path + "' is not a regular file", "pass the path of a weights.tdw file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);

  // Fixed header: check each field as soon as enough bytes exist, so a foreign file reads as foreign.
  unsigned char fixed[kFixedHeaderBytes] = {};
  read_at(fd.get(), fixed, static_cast<size_t>(std::min<uint64_t>(file_size, kFixedHeaderBytes)), 0, path);
  if (file_size < sizeof(kMagic)) throw_truncated(path, file_size, "the header needs 28 bytes");
  if (std::memcmp(fixed, kMagic, sizeof(kMagic)) != 0)
    throw_data(path + " is not a Tandem weights file (bad magic)",
               "pass the weights.tdw written by Tandem's export, not a file in another format");
  if (file_size < 12) throw_truncated(path, file_size, "the header needs 28 bytes");
  const uint32_t version = load_le32(fixed + 8);
  if (version != kFormatVersion)
    throw_data(path + ": unknown format version " + std::to_string(version) + "; this build reads version " +
                   std::to_string(kFormatVersion),
               "upgrade Tandem to read files written by a newer version");
  if (file_size < kFixedHeaderBytes + kTableCrcBytes) throw_truncated(path, file_size, "the header needs 28 bytes");
  const uint32_t tensor_count = load_le32(fixed + 12);
  const uint64_t table_bytes = uint64_t(load_le32(fixed + 16)) | uint64_t(load_le32(fixed + 20)) << 32;
  if (table_bytes > file_size - kFixedHeaderBytes - kTableCrcBytes)
    throw_truncated(path, file_size, "the tensor table needs " + std::to_string(table_bytes) + " bytes");
  const uint64_t header_end = kFixedHeaderBytes + table_bytes + kTableCrcBytes;

  std::vector<unsigned char> header(static_cast<size_t>(header_end));
  std::memcpy(header.data(), fixed, kFixedHeaderBytes);
  read_at(fd.get(), header.data() + kFixedHeaderBytes, static_cast<size_t>(table_bytes + kTableCrcBytes),
          kFixedHeaderBytes, path);
  const uint32_t stored_table_crc = load_le32(header.data() + kFixedHeaderBytes + table_bytes);
  if (crc32c(header.data(), static_cast<size_t>(kFixedHeaderBytes + table_bytes)) != stored_table_crc)
    throw_data("checksum mismatch in the tensor table of " + path + ": the file is corrupted", kCorruptHint);

  // Parse the table. Its CRC matched, so an inconsistency here means a faulty writer or a crafted file.
  if (tensor_count > table_bytes / kMinEntryBytes)
    throw_data(path + ": the tensor table claims " + std::to_string(tensor_count) + " tensors but has only " +
                   std::to_string(table_bytes) + " bytes",
               kCorruptHint);
  TableReader table(path, header.data() + kFixedHeaderBytes, table_bytes, kFixedHeaderBytes);
  std::vector<TableEntry> entries(tensor_count);
  std::unordered_set<std::string> names;
  for (TableEntry& e : entries) {
    const uint64_t entry_offset = table.file_offset();
    const uint16_t name_len = table.u16("a name length");
    if (name_len == 0 || name_len > kMaxNameBytes)
      throw_data(path + ": the tensor entry at byte " + std::to_string(entry_offset) + " has a name of " +
                     std::to_string(name_len) + " bytes; names have 1.." + std::to_string(kMaxNameBytes),
                 kCorruptHint);
    e.name = table.bytes(name_len, "a tensor name");
    if (!is_valid_name(e.name))
      throw_data(path + ": the tensor name " + quoted_name(e.name) + " at byte " + std::to_string(entry_offset + 2) +
                     " is not valid UTF-8 or contains a control character",
                 kCorruptHint);
    if (!names.insert(e.name).second)
      throw_data(path + ": tensor " + quoted_name(e.name) + " appears twice in the tensor table", kCorruptHint);
    const std::string where = "tensor " + quoted_name(e.name) + " of " + path;
    const uint8_t dtype = table.u8("a dtype");
    if (dtype != static_cast<uint8_t>(DType::F32))
      throw_data(where + " has dtype " + std::to_string(dtype) + "; format version 1 stores float32 (1) only",
                 "upgrade Tandem, or re-export the model");
    const uint8_t rank = table.u8("a rank");
    if (rank > kMaxRank)
      throw_data(where + " has rank " + std::to_string(rank) + "; the maximum is " + std::to_string(kMaxRank),
                 kCorruptHint);
    for (uint8_t k = 0; k < rank; ++k) {
      const uint64_t d = table.u64("a dimension");
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw_data(where + " has dimension " + std::to_string(k) + " = " + std::to_string(d) + ", which is too large",
                   kCorruptHint);
      e.dims.push_back(d);
    }
    e.offset = table.u64("a data offset");
    e.byte_size = table.u64("a data size");
    e.crc = table.u32("a data checksum");

    uint64_t expected_bytes = 0;
    if (!byte_size_of(e.dims, &expected_bytes))
      throw_data(where + " has a shape whose size overflows 64 bits", kCorruptHint);
    if (expected_bytes != e.byte_size)
      throw_data(where + ": its shape needs " + std::to_string(expected_bytes) + " bytes but the table says " +
                     std::to_string(e.byte_size),
                 kCorruptHint);
    if (e.offset % kAlignment != 0)
      throw_data(
          where + ": data offset " + std::to_string(e.offset) + " is not a multiple of " + std::to_string(kAlignment),
          kCorruptHint);
    if (e.offset < header_end)
      throw_data(where + ": data offset " + std::to_string(e.offset) + " lies inside the header, which ends at byte " +
                     std::to_string(header_end),
                 kCorruptHint);
    if (e.offset > file_size || e.byte_size > file_size - e.offset)
      throw_truncated(
          path, file_size,
          "tensor " + quoted_name(e.name) + " needs bytes " + std::to_string(e.offset) + ".." +
              (e.offset > std::numeric_limits<uint64_t>::max() - e.byte_size ? std::string("(beyond 2^64)")
                                                                             : std::to_string(e.offset + e.byte_size)));
  }
  if (table.pos() != table_bytes)
    throw_data(path + ": the tensor table has " + std::to_string(table_bytes - table.pos()) +
                   " unexplained bytes after its " + std::to_string(tensor_count) + " entries",
               kCorruptHint);

  // Data regions in file order: no overlaps, zero padding between them, nothing after the last one.
  std::vector<size_t> order(entries.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return entries[a].offset != entries[b].offset ? entries[a].offset < entries[b].offset
                                                  : entries[a].byte_size < entries[b].byte_size;
  });
  uint64_t end = header_end;
  for (size_t k = 0; k < order.size(); ++k) {
    const TableEntry& e = entries[order[k]];
    if (e.offset < end)
      throw_data(path + ": the data of tensors " + quoted_name(entries[order[k - 1]].name) + " and " +
                     quoted_name(e.name) + " overlap",
                 kCorruptHint);
    end = e.offset + e.byte_size;  // in range: checked against file_size above
  }
  if (file_size > end)
    throw_data(path + " has " + std::to_string(file_size - end) + " unexpected bytes after the last tensor (at byte " +
                   std::to_string(end) + ")",
               "the file was appended to or corrupted; re-export the model or restore it from a backup");

  std::vector<NamedTensor> tensors(entries.size());
  uint64_t pos = header_end;
  for (size_t index : order) {
    const TableEntry& e = entries[index];
    while (pos < e.offset) {  // the gap before this tensor must be zero padding
      unsigned char pad[kAlignment];
      const size_t n = static_cast<size_t>(std::min<uint64_t>(e.offset - pos, kAlignment));
      read_at(fd.get(), pad, n, pos, path);
      for (size_t i = 0; i < n; ++i)
        if (pad[i] != 0)
          throw_data(
              path + " has a non-zero padding byte at byte " + std::to_string(pos + i) + ": the file is corrupted",
              kCorruptHint);
      pos += n;
    }
    NamedTensor& t = tensors[index];
    t.name = e.name;
    t.shape.dims.assign(e.dims.begin(), e.dims.end());
    t.values.resize(static_cast<size_t>(e.byte_size / 4));
    read_at(fd.get(), t.values.data(), static_cast<size_t>(e.byte_size), e.offset, path);
    if (crc32c(t.values.data(), static_cast<size_t>(e.byte_size)) != e.crc)
      throw_data("checksum mismatch in tensor " + quoted_name(e.name) + " of " + path + ": the file is corrupted",
                 kCorruptHint);
    pos = std::max(pos, e.offset + e.byte_size);
  }
  return tensors;
}


}  // namespace tandem
