// One fuzz target per input format that Tandem reads (tests/fuzz/README.md). Each target file
// defines its body with TANDEM_FUZZ_TARGET(name); the same file is built two ways:
//   - with TANDEM_LIBFUZZER (build-fuzz/, clang -fsanitize=fuzzer,address,undefined): the body
//     becomes LLVMFuzzerTestOneInput of the executable fuzz_<name>;
//   - otherwise (every ordinary build): the body is registered under `name` in tandem_fuzz_replay,
//     which runs it over the committed seed corpus and the regression inputs (a ctest, in CI under
//     ASan/UBSan too), so an input that once crashed stays fixed without a fuzzing toolchain.
// A target calls the entry point the product uses and lets every exception other than the ones
// the product turns into "one clear error" escape: libFuzzer reports that as a crash, the replay
// as a failure. Anything the product would print as a bug (ErrorKind::Internal) is a crash too.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::fuzz {

using TargetFn = int (*)(const uint8_t* data, size_t size);

// The replay build's registry (name -> body), filled by static registrars.
std::map<std::string, TargetFn>& registry();
struct Registrar {
  Registrar(const char* name, TargetFn fn) { registry()[name] = fn; }
};

// Runs `f`, which calls the product; returns normally for the errors the product reports to its
// user as one clear message (tandem::Error of a kind other than Internal, with a non-empty
// message), and aborts with the message for anything else: an Internal error, an exception of
// another type, or an empty message.
// With TANDEM_FUZZ_VERBOSE set (tandem_fuzz_replay), each input is reported as accepted or with
// the error that rejected it: the seeds must be accepted.
bool verbose();
void expect_clean(const char* target, const std::function<void()>& f);

// The inputs of targets that read several files: a fuzz input is a sequence of
//   "\n@@file NAME\n" CONTENT
// sections (NAME a relative path made of [A-Za-z0-9._-/] without ".."); text before the first
// marker is ignored. Names outside `allowed` are dropped, so the fuzzer cannot write anywhere.
std::map<std::string, std::string> split_files(std::string_view data, const std::vector<std::string>& allowed);
std::string join_files(const std::map<std::string, std::string>& files);

// A scratch directory of this process (under $TMPDIR or /tmp, removed at exit).
const std::filesystem::path& scratch_dir();
// Empties scratch_dir()/bundle, fills it with `files` and returns its path.
std::string write_bundle(const std::map<std::string, std::string>& files);
// One file under scratch_dir()/files, rewritten on each call; returns its path.
std::string scratch_file(const std::string& name, std::string_view content);

// A weights file (weights.tdw, tensors.tdw) with its CRC32Cs recomputed where the layout lets them
// be found: the table's, and each tensor's whose data region lies inside the file. Without this a
// mutation would almost never get past the checksums to the checks behind them (a wrong CRC is
// covered by the unit tests). Works on any bytes; leaves what it cannot parse as it is.
std::string with_weights_crcs(std::string bytes);

}  // namespace tandem::fuzz

#define TANDEM_FUZZ_CONCAT_(a, b) a##b
#define TANDEM_FUZZ_CONCAT(a, b) TANDEM_FUZZ_CONCAT_(a, b)

#ifdef TANDEM_LIBFUZZER
#define TANDEM_FUZZ_TARGET(name)                                                \
  static int TANDEM_FUZZ_CONCAT(fuzz_body_, name)(const uint8_t*, size_t);      \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {     \
    return TANDEM_FUZZ_CONCAT(fuzz_body_, name)(data, size);                    \
  }                                                                             \
  static int TANDEM_FUZZ_CONCAT(fuzz_body_, name)(const uint8_t* data, size_t size)
#else
#define TANDEM_FUZZ_TARGET(name)                                                          \
  static int TANDEM_FUZZ_CONCAT(fuzz_body_, name)(const uint8_t*, size_t);                \
  static const ::tandem::fuzz::Registrar TANDEM_FUZZ_CONCAT(fuzz_registrar_, name)(       \
      #name, &TANDEM_FUZZ_CONCAT(fuzz_body_, name));                                      \
  static int TANDEM_FUZZ_CONCAT(fuzz_body_, name)(const uint8_t* data, size_t size)
#endif

namespace tandem::fuzz {
// The small model of the seeds and of the server targets: Conv2D, BatchNormalization, MaxPool2D,
// Flatten, Dropout, Dense with softmax on 6x6x1 images, 3 classes (a few hundred bytes of weights).
extern const char* const kTinySpec;
constexpr int kTinyRowElems = 36;
constexpr int kTinyClasses = 3;
// Writes version directory `dir` of the tiny model (weights from `seed`).
void write_tiny_version(const std::string& dir, uint64_t seed);
// One row of the tiny model's input as REST's nested lists, [6][6][1].
nlohmann::json tiny_image_json(const std::vector<float>& row);
}  // namespace tandem::fuzz
