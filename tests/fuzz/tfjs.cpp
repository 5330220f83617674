// The TensorFlow.js reader behind `tandem inspect` (export/tfjs_writer.h): tfjs/model.json and its
// weight shards, as a bundle (fuzz_target.h).
#include "export/tfjs_writer.h"
#include "fuzz_target.h"

TANDEM_FUZZ_TARGET(tfjs) {
  static const std::vector<std::string> kFiles = {"model.json",          "group1-shard1of1.bin", "group1-shard1of2.bin",
                                                  "group1-shard2of2.bin", "group2-shard1of1.bin"};
  const std::string dir = tandem::fuzz::write_bundle(tandem::fuzz::split_files({reinterpret_cast<const char*>(data), size}, kFiles));
  tandem::fuzz::expect_clean("tfjs", [&] { tandem::tfjs::describe_tfjs(dir).dump(2); });
  return 0;
}
