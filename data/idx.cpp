#include "data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "engine/errors.h"

namespace tandem {
namespace {

// The largest payload read_idx accepts (16 GiB): far above any image data set, and small enough
// that a hostile header cannot make the reader attempt an absurd allocation.
constexpr uint64_t kMaxPayloadBytes = uint64_t{1} << 34;
constexpr size_t kChunk = size_t{1} << 24;  // 16 MiB per read call

const char* kDataHint =
    "the file must be an unsigned-byte IDX file (the MNIST format), plain or gzip-compressed; "
    "if it is damaged or incomplete, download or install it again";

std::string hex_byte(unsigned v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", v & 0xFFu);
  return buf;
}

const char* idx_type_name(unsigned type) {
  switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "16-bit integer";
    case 0x0C: return "32-bit integer";
    case 0x0D: return "32-bit float";
    case 0x0E: return "64-bit float";
    default: return nullptr;
  }
}

uint32_t load_be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}

void store_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

std::string dims_str(const std::vector<uint32_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + ")";
}

// A byte stream over the (decompressed) IDX contents.
class Source {
 public:
  virtual ~Source() = default;
  // Reads up to n bytes; returns fewer only at the end of the stream. Throws on read errors.
  virtual size_t read(uint8_t* buf, size_t n) = 0;
  // The total length of the stream when it is known in advance (plain files), else -1.
  virtual int64_t known_size() const = 0;
  virtual bool compressed() const = 0;
};

class PlainSource : public Source {
 public:
  PlainSource(std::string path, std::FILE* f, int64_t size) : path_(std::move(path)), f_(f), size_(size) {}
  ~PlainSource() override { std::fclose(f_); }
  size_t read(uint8_t* buf, size_t n) override {
    size_t got = 0;
    while (got < n) {
      size_t r = std::fread(buf + got, 1, n - got, f_);
      got += r;
      if (r == 0) {
        if (std::ferror(f_))
          throw_io("cannot read IDX file " + path_ + " at byte offset " + std::to_string(pos_ + got) + ": " +
                       std::strerror(errno),
                   "check that the file is readable");
        break;
      }
    }
    pos_ += got;
    return got;
  }
  int64_t known_size() const override { return size_; }
  bool compressed() const override { return false; }

 private:
  std::string path_;
  std::FILE* f_;
  int64_t size_;
  uint64_t pos_ = 0;
};

// Decompresses a gzip file with inflate, so that truncation, corruption (including a wrong CRC or
// length in the trailer) and trailing garbage are all reported with the compressed byte offset.
// Several concatenated gzip members are accepted, as gzip(1) does.
class GzipSource : public Source {
 public:
  GzipSource(std::string path, std::FILE* f) : path_(std::move(path)), f_(f), in_(size_t{1} << 17) {
    if (inflateInit2(&zs_, 15 + 16) != Z_OK) {  // +16: gzip wrapper only
      std::fclose(f_);
      throw_error(ErrorKind::Internal, "cannot initialise zlib to read " + path_, "out of memory?");
    }
  }
  ~GzipSource() override {
    inflateEnd(&zs_);
    std::fclose(f_);
  }
  GzipSource(const GzipSource&) = delete;
  GzipSource& operator=(const GzipSource&) = delete;

  size_t read(uint8_t* buf, size_t n) override {
    size_t got = 0;
    while (got < n && !finished_) {
      if (zs_.avail_in == 0 && !eof_ && !refill()) eof_ = true;
      const size_t want = std::min(n - got, kChunk);
      zs_.next_out = buf + got;
      zs_.avail_out = static_cast<uInt>(want);
      const int ret = inflate(&zs_, Z_NO_FLUSH);  // also drains pending output when the input is exhausted
      const size_t produced = want - zs_.avail_out;
      got += produced;
      if (ret == Z_STREAM_END) {
        member_end();
      } else if (ret == Z_BUF_ERROR || (ret == Z_OK && produced == 0 && zs_.avail_in == 0)) {
        if (eof_)
          throw_data("truncated gzip stream in " + path_ + ": the compressed data ends at byte offset " +
                         std::to_string(file_read_) + " after " + std::to_string(pos_ + got) +
                         " decompressed bytes, before the end of the gzip stream",
                     "the compressed file is incomplete; download or install it again");
      } else if (ret != Z_OK) {
        throw_data("corrupt gzip stream in " + path_ + " near compressed byte offset " +
                       std::to_string(compressed_offset()) + " (after " + std::to_string(pos_ + got) +
                       " decompressed bytes): zlib: " + (zs_.msg ? zs_.msg : "error " + std::to_string(ret)),
                   "the compressed file is damaged; download or install it again");
      }
    }
    pos_ += got;
    return got;
  }
  int64_t known_size() const override { return -1; }
  bool compressed() const override { return true; }

 private:
  uint64_t compressed_offset() const { return file_read_ - zs_.avail_in; }

  bool refill() {
    const size_t r = std::fread(in_.data(), 1, in_.size(), f_);
    if (r == 0 && std::ferror(f_))
      throw_io("cannot read gzip-compressed IDX file " + path_ + " at byte offset " + std::to_string(file_read_) +
                   ": " + std::strerror(errno),
               "check that the file is readable");
    file_read_ += r;
    zs_.next_in = in_.data();
    zs_.avail_in = static_cast<uInt>(r);
    return r > 0;
  }

  // After a member's trailer: the file must end, or another gzip member must follow.
  void member_end() {
    if (zs_.avail_in == 0 && (eof_ || !refill())) {
      eof_ = finished_ = true;
      return;
    }
    if (zs_.next_in[0] != 0x1F)
      throw_data("trailing bytes after the gzip stream in " + path_ + " at compressed byte offset " +
                     std::to_string(compressed_offset()),
                 "the compressed file is damaged; download or install it again");
    inflateReset(&zs_);  // another member; a bad header shows up as a zlib data error
  }

  std::string path_;
  std::FILE* f_;
  std::vector<uint8_t> in_;
  z_stream zs_{};
  uint64_t file_read_ = 0;  // compressed bytes read from the file so far
  uint64_t pos_ = 0;        // decompressed bytes returned so far
  bool eof_ = false;        // the compressed file has no more bytes
  bool finished_ = false;   // the last member ended exactly at the end of the file
};

std::unique_ptr<Source> open_source(const std::string& path) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status))
    throw_io("cannot open IDX file " + path + ": no such file", "check the path (and --data / TANDEM_DATA)");
  if (std::filesystem::is_directory(status))
    throw_io("cannot read IDX file " + path + ": it is a directory", "pass the path of a file");

  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw_io("cannot open IDX file " + path + ": " + std::strerror(errno), "check that the file is readable");
  uint8_t magic[2] = {0, 0};
  size_t n = std::fread(magic, 1, 2, f);
  bool gzip = n == 2 && magic[0] == 0x1F && magic[1] == 0x8B;
  int64_t size = -1;
  if (!gzip) {
    if (std::fseek(f, 0, SEEK_END) == 0) {
      long end = std::ftell(f);
      if (end >= 0) size = end;
    }
    if (size < 0 || std::fseek(f, 0, SEEK_SET) != 0) {
      std::fclose(f);
      throw_io("cannot determine the size of IDX file " + path, "pass a regular file");
    }
    return std::make_unique<PlainSource>(path, f, size);
  }
  if (std::fseek(f, 0, SEEK_SET) != 0) {
    std::fclose(f);
    throw_io("cannot rewind gzip-compressed IDX file " + path, "pass a regular file");
  }
  return std::make_unique<GzipSource>(path, f);
}

}  // namespace

IdxArray read_idx(const std::string& path, uint32_t expected_rank) {
  std::unique_ptr<Source> src = open_source(path);
  const std::string what = src->compressed() ? "gzip-compressed IDX file " + path : "IDX file " + path;
  const std::string off = src->compressed() ? "decompressed byte offset " : "byte offset ";

  uint8_t head[4];
  size_t got = src->read(head, 4);
  if (got < 4)
    throw_data(what + ": truncated header at " + off + std::to_string(got) +
                   ": expected a 4-byte magic number, found " + std::to_string(got) + " bytes",
               kDataHint);
  if (head[0] != 0 || head[1] != 0)
    throw_data(what + ": bad magic at " + off + "0: expected 0x00 0x00, found " + hex_byte(head[0]) + " " +
                   hex_byte(head[1]) + " (not an IDX file?)",
               kDataHint);
  const unsigned type = head[2];
  if (type != 0x08) {
    const char* name = idx_type_name(type);
    if (name)
      throw_data(what + ": unsupported element type " + hex_byte(type) + " (" + name + ") at " + off +
                     "2: only unsigned-byte (0x08) IDX files are supported",
                 "convert the file to unsigned bytes");
    throw_data(what + ": bad type byte " + hex_byte(type) + " at " + off +
                   "2: IDX type bytes are 0x08, 0x09, 0x0B, 0x0C, 0x0D or 0x0E",
               kDataHint);
  }
  const unsigned rank = head[3];
  if (rank < 1 || rank > 4)
    throw_data(what + ": bad rank " + std::to_string(rank) + " at " + off + "3: expected 1 to 4 dimensions", kDataHint);

  uint8_t dim_bytes[16];
  const size_t dims_len = 4 * size_t{rank};
  got = src->read(dim_bytes, dims_len);
  if (got < dims_len)
    throw_data(what + ": truncated header at " + off + std::to_string(4 + got) + ": expected " + std::to_string(rank) +
                   " 4-byte dimensions (" + std::to_string(dims_len) + " bytes), found " + std::to_string(got),
               kDataHint);

  IdxArray out;
  out.dims.resize(rank);
  for (unsigned i = 0; i < rank; ++i) out.dims[i] = load_be32(dim_bytes + 4 * i);
  if (expected_rank != 0 && rank != expected_rank)
    throw_data(what + ": rank mismatch at " + off + "3: the file has " + std::to_string(rank) + " dimension(s) " +
                   dims_str(out.dims) + " but " + std::to_string(expected_rank) + " are expected",
               "check that the right file is used (images are rank 3, labels rank 1)");

  uint64_t payload = 1;
  for (uint32_t d : out.dims) {
    if (__builtin_mul_overflow(payload, uint64_t{d}, &payload) || payload > kMaxPayloadBytes)
      throw_data(what + ": dimensions " + dims_str(out.dims) + " at " + off +
                     "4 describe more than the supported maximum of " + std::to_string(kMaxPayloadBytes) + " bytes",
                 kDataHint);
  }
  const uint64_t header = 4 + dims_len;

  const int64_t known = src->known_size();
  if (known >= 0) {
    const uint64_t total = static_cast<uint64_t>(known);
    if (total < header + payload)
      throw_data(what + ": truncated: expected " + std::to_string(payload) + " bytes of data after the " +
                     std::to_string(header) + "-byte header for dimensions " + dims_str(out.dims) + ", found " +
                     std::to_string(total - header) + " (the file ends at byte offset " + std::to_string(total) + ")",
                 kDataHint);
    if (total > header + payload)
      throw_data(what + ": trailing bytes: " + std::to_string(total - header - payload) +
                     " bytes after the end of the data at byte offset " + std::to_string(header + payload) +
                     " (dimensions " + dims_str(out.dims) + ")",
                 kDataHint);
    out.data.resize(payload);
    got = src->read(out.data.data(), payload);
    if (got < payload)  // the file shrank while being read
      throw_data(what + ": truncated: expected " + std::to_string(payload) + " bytes of data, found " +
                     std::to_string(got) + " (the file ends at byte offset " + std::to_string(header + got) + ")",
                 kDataHint);
  } else {
    // Unknown length: grow as data arrives, so a small file with a huge header cannot force a huge allocation.
    uint64_t have = 0;
    while (have < payload) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(payload - have, kChunk));
      out.data.resize(have + want);
      got = src->read(out.data.data() + have, want);
      have += got;
      if (got < want) break;
    }
    if (have < payload)
      throw_data(what + ": truncated: expected " + std::to_string(payload) + " bytes of data after the " +
                     std::to_string(header) + "-byte header for dimensions " + dims_str(out.dims) + ", found " +
                     std::to_string(have) + " (the data ends at " + off + std::to_string(header + have) + ")",
                 kDataHint);
    uint8_t extra[4096];
    uint64_t trailing = src->read(extra, sizeof extra);
    if (trailing > 0) {
      // Count a bounded amount so a decompression bomb cannot keep the reader busy.
      while (trailing < (uint64_t{1} << 20)) {
        size_t r = src->read(extra, sizeof extra);
        if (r == 0) break;
        trailing += r;
      }
      throw_data(what + ": trailing bytes: " + (trailing >= (uint64_t{1} << 20) ? "at least " : "") +
                     std::to_string(trailing) + " bytes after the end of the data at " + off +
                     std::to_string(header + payload) + " (dimensions " + dims_str(out.dims) + ")",
                 kDataHint);
    }
  }
  return out;
}

void write_idx(const std::string& path, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data,
               bool gzip) {
  if (dims.empty() || dims.size() > 4)
    throw_invalid("write_idx " + path + ": rank " + std::to_string(dims.size()) + " is not supported",
                  "IDX files have 1 to 4 dimensions");
  uint64_t n = 1;
  bool overflow = false;
  for (uint32_t d : dims) overflow |= __builtin_mul_overflow(n, uint64_t{d}, &n);
  if (overflow || n != data.size())
    throw_invalid("write_idx " + path + ": dimensions " + dims_str(dims) + " do not match the " +
                      std::to_string(data.size()) + " data bytes",
                  "the product of the dimensions must equal the number of bytes");

  std::vector<uint8_t> header{0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    uint8_t be[4];
    store_be32(be, d);
    header.insert(header.end(), be, be + 4);
  }

  const std::string hint = "check that the directory exists and is writable";
  if (gzip) {
    gzFile g = gzopen(path.c_str(), "wb");
    if (!g) throw_io("cannot create " + path + ": " + std::strerror(errno), hint);
    auto put = [&](const uint8_t* p, size_t len) {
      while (len > 0) {
        unsigned c = static_cast<unsigned>(std::min(len, kChunk));
        if (gzwrite(g, p, c) != static_cast<int>(c)) {
          int err = Z_OK;
          std::string msg = gzerror(g, &err);
          if (err == Z_ERRNO) msg = std::strerror(errno);
          gzclose_w(g);
          throw_io("cannot write " + path + ": " + msg, hint);
        }
        p += c;
        len -= c;
      }
    };
    put(header.data(), header.size());
    put(data.data(), data.size());
    int rc = gzclose_w(g);
    if (rc != Z_OK) throw_io("cannot finish writing " + path + " (zlib error " + std::to_string(rc) + ")", hint);
    return;
  }
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw_io("cannot create " + path + ": " + std::strerror(errno), hint);
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size();
  if (ok && !data.empty()) ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
  int saved = errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  if (!ok) throw_io("cannot write " + path + ": " + std::strerror(saved), hint);
}

}  // namespace tandem
