// A training checkpoint as `tandem train --resume` reads it: checkpoints/latest, and
// ckpt-<step>/state.json and tensors.tdw. The input is a multi-file bundle (fuzz_target.h), the
// checksums of the .tdw files made right (with_weights_crcs).
#include "storage/checkpoint.h"
#include "fuzz_target.h"

TANDEM_FUZZ_TARGET(checkpoint) {
  static const std::vector<std::string> kFiles = {"latest",          "ckpt-1/state.json", "ckpt-1/tensors.tdw",
                                                  "ckpt-2/state.json", "ckpt-2/tensors.tdw"};
  auto files = tandem::fuzz::split_files({reinterpret_cast<const char*>(data), size}, kFiles);
  for (auto& [name, content] : files)
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tdw") == 0) content = tandem::fuzz::with_weights_crcs(content);
  const std::string dir = tandem::fuzz::write_bundle(files);
  tandem::fuzz::expect_clean("checkpoint", [&] {
    const auto ckpt = tandem::read_latest_checkpoint(dir);
    if (ckpt) tandem::require_same_identity(ckpt->identity, ckpt->identity, ckpt->dir);
  });
  return 0;
}
