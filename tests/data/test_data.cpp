// Tests for data/: the IDX reader and writer (strict validation of malformed files), the
// Fashion-MNIST loader, the validation split and the per-epoch shuffle.
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/idx.h"
#include "engine/errors.h"

namespace fs = std::filesystem;
using tandem::Error;
using tandem::ErrorKind;

namespace {

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path_ = fs::temp_directory_path() / ("tandem_test_data_" + std::to_string(::getpid()) + "_" +
                                         std::to_string(stamp) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

using Bytes = std::vector<uint8_t>;

void put_be32(Bytes& b, uint32_t v) {
  b.push_back(static_cast<uint8_t>(v >> 24));
  b.push_back(static_cast<uint8_t>(v >> 16));
  b.push_back(static_cast<uint8_t>(v >> 8));
  b.push_back(static_cast<uint8_t>(v));
}

// Raw IDX bytes with arbitrary (possibly invalid) header fields.
Bytes idx_bytes(uint8_t type, const std::vector<uint32_t>& dims, const Bytes& payload, uint8_t rank_byte = 0xFF) {
  Bytes b = {0, 0, type, rank_byte == 0xFF ? static_cast<uint8_t>(dims.size()) : rank_byte};
  for (uint32_t d : dims) put_be32(b, d);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

Bytes pattern(size_t n, uint8_t mul = 7) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i * mul + 3);
  return b;
}

void write_plain(const std::string& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  REQUIRE(out.good());
}

Bytes gzip_bytes(const Bytes& b) {
  uLongf cap = compressBound(static_cast<uLong>(b.size())) + 64;
  Bytes out(cap);
  z_stream zs{};
  REQUIRE(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);  // +16: gzip wrapper
  zs.next_in = const_cast<Bytef*>(b.data());
  zs.avail_in = static_cast<uInt>(b.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

void write_gz(const std::string& path, const Bytes& b) { write_plain(path, gzip_bytes(b)); }

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs `fn`, requires a tandem::Error of `kind` whose message contains every string in `parts`.
void require_error(const std::function<void()>& fn, ErrorKind kind, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const Error& e) {
    INFO("message: " << e.what() << "\nhint: " << e.hint());
    CHECK(tandem::error_kind_name(e.kind()) == std::string(tandem::error_kind_name(kind)));
    for (const std::string& p : parts) CHECK_THAT(e.what(), Catch::Contains(p));
    CHECK_FALSE(e.hint().empty());
    return;
  } catch (const std::exception& e) {
    FAIL("expected tandem::Error, got std::exception: " << e.what());
    return;
  }
  FAIL("expected tandem::Error, nothing was thrown");
}

void require_idx_error(const std::string& path, uint32_t expected_rank, ErrorKind kind,
                       std::initializer_list<std::string> parts) {
  require_error([&] { tandem::read_idx(path, expected_rank); }, kind, parts);
}

}  // namespace

TEST_CASE("write_idx / read_idx round trip, plain and gzip", "[cpu][data][idx]") {
  TempDir tmp;
  const std::vector<std::vector<uint32_t>> shapes = {{5}, {3, 4}, {2, 3, 4}, {2, 1, 3, 2}, {0}, {0, 28, 28}};
  for (bool gz : {false, true}) {
    for (const auto& dims : shapes) {
      size_t n = 1;
      for (uint32_t d : dims) n *= d;
      const Bytes data = pattern(n);
      const std::string path =
          tmp.file("a" + std::to_string(dims.size()) + "_" + std::to_string(n) + (gz ? ".gz" : ""));
      tandem::write_idx(path, dims, data, gz);
      const Bytes raw = read_file(path);
      REQUIRE(raw.size() >= 2);
      CHECK((raw[0] == 0x1F && raw[1] == 0x8B) == gz);
      tandem::IdxArray a = tandem::read_idx(path, static_cast<uint32_t>(dims.size()));
      CHECK(a.dims == dims);
      CHECK(a.data == data);
      CHECK(tandem::read_idx(path).dims == dims);  // expected_rank 0 accepts any rank
    }
  }
}

TEST_CASE("read_idx detects gzip by magic bytes, not by the file name", "[cpu][data][idx]") {
  TempDir tmp;
  const Bytes file = idx_bytes(0x08, {4, 2}, pattern(8));
  write_gz(tmp.file("compressed.idx"), file);
  write_plain(tmp.file("plain.gz"), file);
  for (const char* name : {"compressed.idx", "plain.gz"}) {
    tandem::IdxArray a = tandem::read_idx(tmp.file(name), 2);
    CHECK(a.dims == std::vector<uint32_t>{4, 2});
    CHECK(a.data == pattern(8));
  }
}

TEST_CASE("read_idx accepts concatenated gzip members", "[cpu][data][idx]") {
  TempDir tmp;
  const Bytes file = idx_bytes(0x08, {3, 7}, pattern(21));
  for (size_t cut : {size_t{3}, size_t{4}, size_t{16}, size_t{20}}) {
    Bytes two = gzip_bytes(Bytes(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(cut)));
    const Bytes second = gzip_bytes(Bytes(file.begin() + static_cast<std::ptrdiff_t>(cut), file.end()));
    two.insert(two.end(), second.begin(), second.end());
    const std::string p = tmp.file("members" + std::to_string(cut) + ".gz");
    write_plain(p, two);
    tandem::IdxArray a = tandem::read_idx(p, 2);
    CHECK(a.dims == std::vector<uint32_t>{3, 7});
    CHECK(a.data == pattern(21));
  }
}

TEST_CASE("read_idx handles a payload larger than one read chunk", "[cpu][data][idx]") {
  TempDir tmp;
  const Bytes data = pattern((size_t{1} << 24) + 12345, 13);
  const std::vector<uint32_t> dims = {static_cast<uint32_t>(data.size())};
  for (bool gz : {false, true}) {
    const std::string path = tmp.file(gz ? "big.gz" : "big");
    tandem::write_idx(path, dims, data, gz);
    tandem::IdxArray a = tandem::read_idx(path, 1);
    CHECK(a.dims == dims);
    CHECK((a.data == data));
  }
}

TEST_CASE("read_idx rejects malformed headers", "[cpu][data][idx]") {
  TempDir tmp;
  for (bool gz : {false, true}) {
    auto make = [&](const std::string& name, const Bytes& b) {
      const std::string path = tmp.file(name + (gz ? "_gz" : "_plain"));
      if (gz)
        write_gz(path, b);
      else
        write_plain(path, b);
      return path;
    };
    SECTION(std::string("bad magic ") + (gz ? "gz" : "plain")) {
      Bytes b = idx_bytes(0x08, {3}, pattern(3));
      b[0] = 0x01;
      const std::string p = make("badmagic", b);
      require_idx_error(p, 0, ErrorKind::Data, {p, "bad magic", "offset 0"});
    }
    SECTION(std::string("text file ") + (gz ? "gz" : "plain")) {
      const std::string text = "hello, this is not an IDX file\n";
      const std::string p = make("text", Bytes(text.begin(), text.end()));
      require_idx_error(p, 0, ErrorKind::Data, {p, "bad magic"});
    }
    SECTION(std::string("bad type byte ") + (gz ? "gz" : "plain")) {
      const std::string p = make("badtype", idx_bytes(0x07, {3}, pattern(3)));
      require_idx_error(p, 0, ErrorKind::Data, {p, "bad type byte", "0x07", "offset 2"});
    }
    SECTION(std::string("unsupported types ") + (gz ? "gz" : "plain")) {
      for (uint8_t t : {0x09, 0x0B, 0x0C, 0x0D, 0x0E}) {
        const std::string p = make("unsupported" + std::to_string(t), idx_bytes(t, {3}, pattern(12)));
        require_idx_error(p, 0, ErrorKind::Data, {p, "unsupported", "offset 2", "0x08"});
      }
    }
    SECTION(std::string("bad rank ") + (gz ? "gz" : "plain")) {
      const std::string p0 = make("rank0", idx_bytes(0x08, {}, {}, 0));
      require_idx_error(p0, 0, ErrorKind::Data, {p0, "bad rank 0", "offset 3"});
      const std::string p5 = make("rank5", idx_bytes(0x08, {1, 1, 1, 1, 1}, {7}));
      require_idx_error(p5, 0, ErrorKind::Data, {p5, "bad rank 5", "offset 3"});
    }
    SECTION(std::string("rank mismatch ") + (gz ? "gz" : "plain")) {
      const std::string p = make("labels", idx_bytes(0x08, {6}, pattern(6)));
      require_idx_error(p, 3, ErrorKind::Data, {p, "rank mismatch", "has 1 dimension", "3 are expected"});
    }
    SECTION(std::string("truncated header ") + (gz ? "gz" : "plain")) {
      const std::string empty = make("empty", {});
      require_idx_error(empty, 0, ErrorKind::Data, {empty, "truncated header", "offset 0"});
      const std::string p3 = make("three", {0, 0, 8});
      require_idx_error(p3, 0, ErrorKind::Data, {p3, "truncated header", "offset 3"});
      Bytes b = idx_bytes(0x08, {2, 3, 4}, {});
      b.resize(10);  // the second dimension is cut off after 2 of its 4 bytes
      const std::string pd = make("dims", b);
      require_idx_error(pd, 0, ErrorKind::Data, {pd, "truncated header", "offset 10"});
    }
    SECTION(std::string("huge dimensions ") + (gz ? "gz" : "plain")) {
      // 0xFFFFFFFF^4 overflows 64 bits; 0xFFFFFFFF^2 does not but exceeds the size cap.
      const std::string p4 =
          make("overflow", idx_bytes(0x08, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, {}));
      require_idx_error(p4, 0, ErrorKind::Data, {p4, "maximum", "offset 4"});
      const std::string p2 = make("toobig", idx_bytes(0x08, {0xFFFFFFFFu, 0xFFFFFFFFu}, {}));
      require_idx_error(p2, 0, ErrorKind::Data, {p2, "maximum"});
      // Large but under the cap: must fail as truncated without allocating the claimed size first.
      const std::string p1 = make("claims4g", idx_bytes(0x08, {0xFFFFFFFFu}, pattern(10)));
      require_idx_error(p1, 1, ErrorKind::Data, {p1, "truncated", "expected 4294967295 bytes", "found 10"});
    }
  }
}

TEST_CASE("read_idx requires the exact file length", "[cpu][data][idx]") {
  TempDir tmp;
  const Bytes full = idx_bytes(0x08, {2, 5}, pattern(10));
  Bytes short_file(full.begin(), full.end() - 3);
  Bytes long_file = full;
  long_file.push_back(0xAB);
  long_file.push_back(0xCD);

  const std::string ps = tmp.file("short");
  write_plain(ps, short_file);
  require_idx_error(ps, 2, ErrorKind::Data, {ps, "truncated: expected 10 bytes of data", "found 7"});
  const std::string pl = tmp.file("long");
  write_plain(pl, long_file);
  require_idx_error(pl, 2, ErrorKind::Data, {pl, "trailing bytes", "2 bytes", "offset 22"});

  const std::string gs = tmp.file("short.gz");
  write_gz(gs, short_file);
  require_idx_error(gs, 2, ErrorKind::Data, {gs, "truncated: expected 10 bytes of data", "found 7"});
  const std::string gl = tmp.file("long.gz");
  write_gz(gl, long_file);
  require_idx_error(gl, 2, ErrorKind::Data, {gl, "trailing bytes", "2 bytes", "offset 22"});
}

TEST_CASE("read_idx reports corrupt and truncated gzip streams as data errors", "[cpu][data][idx]") {
  TempDir tmp;
  const Bytes file = idx_bytes(0x08, {50, 40}, pattern(2000, 31));
  const Bytes gz = gzip_bytes(file);
  REQUIRE(gz.size() > 40);

  SECTION("truncated compressed stream") {
    for (size_t keep : {size_t{2}, size_t{5}, size_t{12}, gz.size() / 2, gz.size() - 4, gz.size() - 1}) {
      const std::string p = tmp.file("cut" + std::to_string(keep) + ".gz");
      write_plain(p, Bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(keep)));
      require_idx_error(p, 0, ErrorKind::Data, {p});
    }
  }
  SECTION("corrupt compressed data") {
    for (size_t at : {size_t{3}, size_t{12}, gz.size() / 2, gz.size() - 6}) {
      Bytes bad = gz;
      bad[at] ^= 0x5A;
      const std::string p = tmp.file("flip" + std::to_string(at) + ".gz");
      write_plain(p, bad);
      require_idx_error(p, 0, ErrorKind::Data, {p});
    }
  }
  SECTION("garbage after the gzip magic") {
    Bytes bad = {0x1F, 0x8B};
    const Bytes junk = pattern(64, 97);
    bad.insert(bad.end(), junk.begin(), junk.end());
    const std::string p = tmp.file("junk.gz");
    write_plain(p, bad);
    require_idx_error(p, 0, ErrorKind::Data, {p, "gzip"});
  }
  SECTION("truncated stream message") {
    const std::string p = tmp.file("half.gz");
    write_plain(p, Bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)));
    require_idx_error(p, 0, ErrorKind::Data,
                      {p, "truncated gzip stream", "byte offset " + std::to_string(gz.size() / 2)});
  }
  SECTION("trailing garbage after the gzip stream") {
    Bytes bad = gz;
    bad.push_back('x');
    bad.push_back('\n');
    const std::string p = tmp.file("garbage.gz");
    write_plain(p, bad);
    require_idx_error(p, 0, ErrorKind::Data, {p, "trailing bytes after the gzip stream", std::to_string(gz.size())});
  }
  SECTION("wrong length in the trailer") {
    Bytes bad = gz;
    bad[gz.size() - 4] ^= 0x01;  // the ISIZE field
    const std::string p = tmp.file("isize.gz");
    write_plain(p, bad);
    require_idx_error(p, 0, ErrorKind::Data, {p, "corrupt gzip stream"});
  }
  SECTION("wrong CRC") {
    Bytes bad = gz;
    bad[gz.size() - 8] ^= 0xFF;  // the CRC32 field of the gzip trailer
    const std::string p = tmp.file("crc.gz");
    write_plain(p, bad);
    require_idx_error(p, 0, ErrorKind::Data, {p, "corrupt gzip stream"});
  }
}

TEST_CASE("read_idx reports missing files and directories as I/O errors", "[cpu][data][idx]") {
  TempDir tmp;
  const std::string missing = tmp.file("does-not-exist-idx1-ubyte");
  require_idx_error(missing, 0, ErrorKind::Io, {missing});
  require_idx_error(tmp.path().string(), 0, ErrorKind::Io, {tmp.path().string(), "directory"});
}

TEST_CASE("write_idx validates its arguments and reports I/O failures", "[cpu][data][idx]") {
  TempDir tmp;
  require_error(
      [&] {
        tandem::write_idx(tmp.file("x"), {2, 2}, pattern(3), false);
      },
      ErrorKind::InvalidArgument, {"do not match"});
  require_error([&] { tandem::write_idx(tmp.file("x"), {}, {}, false); }, ErrorKind::InvalidArgument, {"rank 0"});
  require_error(
      [&] {
        tandem::write_idx(tmp.file("x"), {1, 1, 1, 1, 1}, {1}, true);
      },
      ErrorKind::InvalidArgument, {"rank 5"});
  const std::string nodir = tmp.file("no/such/dir/file");
  require_error([&] { tandem::write_idx(nodir, {1}, {1}, false); }, ErrorKind::Io, {nodir});
  require_error([&] { tandem::write_idx(nodir, {1}, {1}, true); }, ErrorKind::Io, {nodir});
}

namespace {

// Writes a small Fashion-MNIST-shaped data set into `dir`.
void write_fake_fashion(const TempDir& dir, uint32_t n_train, uint32_t n_test, uint32_t h, uint32_t w, bool gz = true) {
  auto labels = [](uint32_t n) {
    Bytes b(n);
    for (uint32_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i % 10);
    return b;
  };
  const std::string ext = gz ? ".gz" : "";
  tandem::write_idx(dir.file("train-images-idx3-ubyte" + ext), {n_train, h, w}, pattern(size_t{n_train} * h * w), gz);
  tandem::write_idx(dir.file("train-labels-idx1-ubyte" + ext), {n_train}, labels(n_train), gz);
  tandem::write_idx(dir.file("t10k-images-idx3-ubyte" + ext), {n_test, h, w}, pattern(size_t{n_test} * h * w, 11), gz);
  tandem::write_idx(dir.file("t10k-labels-idx1-ubyte" + ext), {n_test}, labels(n_test), gz);
}

}  // namespace

TEST_CASE("load_fashion_mnist loads a well-formed directory", "[cpu][data][dataset]") {
  for (bool gz : {true, false}) {
    TempDir tmp;
    write_fake_fashion(tmp, 12, 5, 4, 3, gz);
    tandem::LabelledData d = tandem::load_fashion_mnist(tmp.path().string());
    CHECK(d.train.count == 12);
    CHECK(d.test.count == 5);
    CHECK(d.train.sample_shape == tandem::Shape{4, 3, 1});
    CHECK(d.test.sample_shape == tandem::Shape{4, 3, 1});
    CHECK(d.train.sample_elems() == 12);
    CHECK(d.train.num_classes == 10);
    CHECK(d.train.images == pattern(12 * 12));
    CHECK(d.test.images == pattern(5 * 12, 11));
    CHECK(d.train.labels[11] == 1);
    CHECK(d.class_names == tandem::fashion_mnist_class_names());
  }
}

TEST_CASE("load_fashion_mnist prefers the .gz file and accepts a mix", "[cpu][data][dataset]") {
  TempDir tmp;
  write_fake_fashion(tmp, 10, 4, 2, 2, /*gz=*/true);
  // A plain train-labels file with different contents next to the .gz one must be ignored.
  tandem::write_idx(tmp.file("train-labels-idx1-ubyte"), {10}, Bytes(10, 9), false);
  // Replace the compressed test labels by a plain file only.
  fs::remove(tmp.file("t10k-labels-idx1-ubyte.gz"));
  tandem::write_idx(tmp.file("t10k-labels-idx1-ubyte"), {4}, Bytes{3, 3, 3, 3}, false);
  tandem::LabelledData d = tandem::load_fashion_mnist(tmp.path().string());
  CHECK(d.train.labels[0] == 0);
  CHECK(d.train.labels[9] == 9);
  CHECK(d.test.labels == Bytes{3, 3, 3, 3});
}

TEST_CASE("load_fashion_mnist rejects inconsistent data", "[cpu][data][dataset]") {
  const std::string hint_part = "dataset-fashion-mnist";
  SECTION("missing directory") {
    TempDir tmp;
    const std::string dir = tmp.file("nowhere");
    try {
      tandem::load_fashion_mnist(dir);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::Io);
      CHECK_THAT(e.what(), Catch::Contains(dir));
      CHECK_THAT(e.hint(), Catch::Contains(hint_part) && Catch::Contains("TANDEM_DATA"));
    }
  }
  SECTION("missing file") {
    TempDir tmp;
    write_fake_fashion(tmp, 10, 4, 2, 2);
    fs::remove(tmp.file("t10k-images-idx3-ubyte.gz"));
    try {
      tandem::load_fashion_mnist(tmp.path().string());
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::Io);
      CHECK_THAT(e.what(), Catch::Contains("t10k-images-idx3-ubyte"));
      CHECK_THAT(e.hint(), Catch::Contains(hint_part) && Catch::Contains("--data"));
    }
  }
  SECTION("image/label count mismatch") {
    TempDir tmp;
    write_fake_fashion(tmp, 10, 4, 2, 2);
    tandem::write_idx(tmp.file("train-labels-idx1-ubyte.gz"), {9}, Bytes(9, 1), true);
    require_error([&] { tandem::load_fashion_mnist(tmp.path().string()); }, ErrorKind::Data,
                  {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "10 images", "9 labels"});
  }
  SECTION("label out of range") {
    TempDir tmp;
    write_fake_fashion(tmp, 10, 4, 2, 2);
    tandem::write_idx(tmp.file("t10k-labels-idx1-ubyte.gz"), {4}, Bytes{0, 9, 10, 2}, true);
    require_error([&] { tandem::load_fashion_mnist(tmp.path().string()); }, ErrorKind::Data,
                  {"t10k-labels-idx1-ubyte.gz", "label 2", "value 10"});
  }
  SECTION("images with the wrong rank") {
    TempDir tmp;
    write_fake_fashion(tmp, 10, 4, 2, 2);
    tandem::write_idx(tmp.file("train-images-idx3-ubyte.gz"), {10, 4}, pattern(40), true);
    require_error([&] { tandem::load_fashion_mnist(tmp.path().string()); }, ErrorKind::Data,
                  {"train-images-idx3-ubyte.gz", "rank mismatch"});
  }
  SECTION("labels with the wrong rank") {
    TempDir tmp;
    write_fake_fashion(tmp, 10, 4, 2, 2);
    tandem::write_idx(tmp.file("train-labels-idx1-ubyte.gz"), {10, 1}, Bytes(10, 1), true);
    require_error([&] { tandem::load_fashion_mnist(tmp.path().string()); }, ErrorKind::Data,
                  {"train-labels-idx1-ubyte.gz", "rank mismatch"});
  }
  SECTION("zero-sized images") {
    TempDir tmp;
    write_fake_fashion(tmp, 10, 4, 2, 2);
    tandem::write_idx(tmp.file("train-images-idx3-ubyte.gz"), {10, 0, 2}, {}, true);
    require_error([&] { tandem::load_fashion_mnist(tmp.path().string()); }, ErrorKind::Data,
                  {"train-images-idx3-ubyte.gz", "0x2"});
  }
  SECTION("train and test image sizes differ") {
    TempDir tmp;
    write_fake_fashion(tmp, 10, 4, 2, 2);
    tandem::write_idx(tmp.file("t10k-images-idx3-ubyte.gz"), {4, 3, 2}, pattern(24), true);
    require_error([&] { tandem::load_fashion_mnist(tmp.path().string()); }, ErrorKind::Data,
                  {"(2, 2, 1)", "(3, 2, 1)"});
  }
  SECTION("a malformed file inside the directory") {
    TempDir tmp;
    write_fake_fashion(tmp, 10, 4, 2, 2);
    const std::string p = tmp.file("train-labels-idx1-ubyte.gz");
    Bytes gz = read_file(p);
    write_plain(p, Bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)));
    require_error([&] { tandem::load_fashion_mnist(tmp.path().string()); }, ErrorKind::Data, {p});
  }
}

TEST_CASE("fashion_mnist_class_names and resolve_data_dir", "[cpu][data][dataset]") {
  const auto& names = tandem::fashion_mnist_class_names();
  REQUIRE(names.size() == 10);
  CHECK(names.front() == "T-shirt/top");
  CHECK(names[5] == "Sandal");
  CHECK(names.back() == "Ankle boot");

  const char* old = std::getenv("TANDEM_DATA");
  const std::string saved = old ? old : "";
  ::setenv("TANDEM_DATA", "/env/dir", 1);
  CHECK(tandem::resolve_data_dir("/flag/dir") == "/flag/dir");
  CHECK(tandem::resolve_data_dir("") == "/env/dir");
  ::setenv("TANDEM_DATA", "", 1);
  CHECK(tandem::resolve_data_dir("") == "/usr/share/datasets/fashion-mnist");
  ::unsetenv("TANDEM_DATA");
  CHECK(tandem::resolve_data_dir("") == "/usr/share/datasets/fashion-mnist");
  if (old) ::setenv("TANDEM_DATA", saved.c_str(), 1);
}

namespace {

tandem::Dataset numbered(int64_t n) {
  tandem::Dataset d;
  d.sample_shape = tandem::Shape{2, 1, 1};
  d.count = n;
  for (int64_t i = 0; i < n; ++i) {
    d.images.push_back(static_cast<uint8_t>(2 * i));
    d.images.push_back(static_cast<uint8_t>(2 * i + 1));
    d.labels.push_back(static_cast<uint8_t>(i % 10));
  }
  return d;
}

}  // namespace

TEST_CASE("Dataset::slice", "[cpu][data][dataset]") {
  const tandem::Dataset d = numbered(8);
  tandem::Dataset s = d.slice(2, 5);
  CHECK(s.count == 3);
  CHECK(s.sample_shape == d.sample_shape);
  CHECK(s.images == Bytes{4, 5, 6, 7, 8, 9});
  CHECK(s.labels == Bytes{2, 3, 4});
  CHECK(d.slice(3, 3).count == 0);
  CHECK(d.slice(0, 8).images == d.images);
  for (auto range : {std::pair<int64_t, int64_t>{-1, 2}, {5, 4}, {0, 9}, {9, 9}}) {
    require_error([&] { d.slice(range.first, range.second); }, ErrorKind::InvalidArgument, {"out of range"});
  }
}

TEST_CASE("split_validation takes the first samples for validation", "[cpu][data][dataset]") {
  const tandem::Dataset d = numbered(10);
  auto [train, valid] = tandem::split_validation(d, 3);
  CHECK(valid.count == 3);
  CHECK(train.count == 7);
  CHECK(valid.labels == Bytes{0, 1, 2});
  CHECK(train.labels == Bytes{3, 4, 5, 6, 7, 8, 9});
  CHECK(train.images.front() == 6);
  CHECK(train.sample_shape == d.sample_shape);

  auto [all, none] = tandem::split_validation(d, 0);
  CHECK(all.count == 10);
  CHECK(none.count == 0);

  for (int64_t bad : {int64_t{-1}, int64_t{10}, int64_t{11}}) {
    try {
      tandem::split_validation(d, bad);
      FAIL("no error for " << bad);
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::InvalidArgument);
      CHECK_THAT(e.hint(), Catch::Contains("--validation-size"));
    }
  }
}

TEST_CASE("epoch_permutation is a deterministic permutation of (seed, epoch)", "[cpu][data][dataset]") {
  const int64_t n = 1000;
  const std::vector<int32_t> p = tandem::epoch_permutation(n, 42, 0);
  REQUIRE(p.size() == static_cast<size_t>(n));
  std::vector<int32_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < n; ++i) REQUIRE(sorted[static_cast<size_t>(i)] == i);

  CHECK(tandem::epoch_permutation(n, 42, 0) == p);
  CHECK(tandem::epoch_permutation(n, 42, 1) != p);
  CHECK(tandem::epoch_permutation(n, 43, 0) != p);
  CHECK(tandem::epoch_permutation(n, 42, 1) != tandem::epoch_permutation(n, 43, 1));

  // Actually shuffled: few fixed points.
  int fixed = 0;
  for (int64_t i = 0; i < n; ++i) fixed += p[static_cast<size_t>(i)] == i;
  CHECK(fixed < 20);

  CHECK(tandem::epoch_permutation(0, 1, 1).empty());
  CHECK(tandem::epoch_permutation(1, 1, 1) == std::vector<int32_t>{0});
  require_error([] { tandem::epoch_permutation(-1, 1, 1); }, ErrorKind::InvalidArgument, {"-1"});
}

TEST_CASE("load_fashion_mnist reads the installed data set", "[cpu][data][dataset][real]") {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::is_directory(dir)) {
    WARN("Fashion-MNIST is not installed at " << dir << "; skipping (install dataset-fashion-mnist)");
    return;
  }
  tandem::LabelledData d = tandem::load_fashion_mnist(dir);
  CHECK(d.train.count == 60000);
  CHECK(d.test.count == 10000);
  CHECK(d.train.sample_shape == tandem::Shape{28, 28, 1});
  CHECK(d.test.sample_shape == tandem::Shape{28, 28, 1});
  CHECK(d.train.images.size() == size_t{60000} * 784);
  CHECK(d.test.labels.size() == size_t{10000});
  // Fashion-MNIST is balanced: 6000 training and 1000 test samples per class.
  std::vector<int> train_hist(10), test_hist(10);
  for (uint8_t l : d.train.labels) ++train_hist[l];
  for (uint8_t l : d.test.labels) ++test_hist[l];
  CHECK(train_hist == std::vector<int>(10, 6000));
  CHECK(test_hist == std::vector<int>(10, 1000));
  CHECK(d.class_names.size() == 10);
}

TEST_CASE("read_idx never fails with anything but tandem::Error on mutated files", "[cpu][data][idx]") {
  TempDir tmp;
  const Bytes good = idx_bytes(0x08, {6, 5, 4}, pattern(120, 37));
  const Bytes good_gz = gzip_bytes(good);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  int ok = 0, data_errors = 0;
  for (int iter = 0; iter < 600; ++iter) {
    Bytes b = (iter % 2) ? good_gz : good;
    const int edits = 1 + static_cast<int>(next() % 4);
    for (int e = 0; e < edits && !b.empty(); ++e) {
      const size_t at = next() % b.size();
      switch (next() % 3) {
        case 0: b[at] = static_cast<uint8_t>(next()); break;
        case 1: b.resize(at); break;
        default: b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<uint8_t>(next())); break;
      }
    }
    const std::string p = tmp.file("fuzz" + std::to_string(iter));
    write_plain(p, b);
    try {
      tandem::IdxArray a = tandem::read_idx(p);
      size_t n = 1;
      for (uint32_t d : a.dims) n *= d;
      REQUIRE(a.data.size() == n);
      ++ok;
    } catch (const Error& e) {
      REQUIRE(e.kind() == ErrorKind::Data);
      REQUIRE_THAT(e.what(), Catch::Contains(p));
      ++data_errors;
    }
  }
  CHECK(data_errors > 300);
  INFO("accepted " << ok << " mutated files");
}
