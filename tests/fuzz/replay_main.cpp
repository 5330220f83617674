// tandem_fuzz_replay: the fuzz targets without libFuzzer (fuzz_target.h).
//   tandem_fuzz_replay --list                 the targets built in
//   tandem_fuzz_replay TARGET PATH...         runs TARGET once on each file (directories: every
//                                             file below them); exit 0 when no input crashed
//   tandem_fuzz_replay --make-seeds DIR       writes the seed corpus (DIR/<target>/...), from the
//                                             product's own writers (tests/fuzz/corpus is its output)
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_target.h"

namespace fs = std::filesystem;

namespace tandem::fuzz {
void make_seeds(const fs::path& dir);  // seeds.cpp
}

static std::vector<fs::path> inputs_of(const std::vector<std::string>& args) {
  std::vector<fs::path> out;
  for (const std::string& a : args) {
    if (fs::is_directory(a)) {
      for (const auto& e : fs::recursive_directory_iterator(a))
        if (e.is_regular_file()) out.push_back(e.path());
    } else {
      out.emplace_back(a);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

int main(int argc, char** argv) {
  auto& targets = tandem::fuzz::registry();
  if (argc == 2 && std::strcmp(argv[1], "--list") == 0) {
    for (const auto& [name, fn] : targets) std::printf("%s\n", name.c_str());
    return 0;
  }
  if (argc == 3 && std::strcmp(argv[1], "--make-seeds") == 0) {
    tandem::fuzz::make_seeds(argv[2]);
    return 0;
  }
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s --list | --make-seeds DIR | TARGET PATH...\n", argv[0]);
    return 2;
  }
  const auto it = targets.find(argv[1]);
  if (it == targets.end()) {
    std::fprintf(stderr, "%s: no fuzz target '%s' (--list shows them)\n", argv[0], argv[1]);
    return 2;
  }
  const std::vector<fs::path> files = inputs_of(std::vector<std::string>(argv + 2, argv + argc));
  if (files.empty()) {
    std::fprintf(stderr, "%s: no input files under the given paths\n", argv[0]);
    return 2;
  }
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "%s: %s (%zu bytes)\n", argv[1], f.c_str(), bytes.size());
    it->second(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());  // aborts on a finding
  }
  std::printf("%s: %zu inputs, no crash\n", argv[1], files.size());
  return 0;
}
