// Links against tandem_engine alone (tests/CMakeLists.txt): the engine layer needs no other
// library. A call from engine/ into kernels/, data/ or export/ fails this link (the include check,
// tools/check_layers.py, catches the includes).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/checksum.h"
#include "engine/dataset.h"
#include "engine/model.h"

int main() {
  const tandem::Model m = tandem::Model::from_spec(
      nlohmann::json::parse(R"({"input_shape": [4], "layers": [{"type": "Dense", "units": 2, "activation": "softmax"}]})"), "engine_alone");
  const std::string digest = tandem::weights_digest(m.to_tensors(m.initial_weights(1)));
  const auto order = tandem::epoch_permutation(5, 1, 0);
  std::printf("%s %zu %08x\n", digest.c_str(), order.size(), tandem::crc32c("123456789", 9));
  return digest.size() == 16 && order.size() == 5 && tandem::crc32c("123456789", 9) == 0xE3069283u ? 0 : 1;
}
