// The model spec (`tandem train --model FILE`): JSON through Model::from_name_or_file. A spec that
// validates must also run: when it is small enough, one forward pass (training and inference) on
// the CPU backend, so that the shape inference and the kernels agree on every accepted spec.
#include "engine/backend.h"
#include "engine/model.h"
#include "engine/replica.h"
#include "fuzz_target.h"
#include "kernels/backends.h"

TANDEM_FUZZ_TARGET(model_spec) {
  const std::string path = tandem::fuzz::scratch_file("spec.json", {reinterpret_cast<const char*>(data), size});
  tandem::fuzz::expect_clean("model_spec", [&] {
    const tandem::Model m = tandem::Model::from_name_or_file(path);
    int64_t activations = m.input_shape().numel();
    for (const auto& layer : m.layers()) activations += layer->output_shape().numel();
    if (m.arena_floats() > (1u << 20) || activations > (1 << 20)) return;  // valid, too big to run here
    auto backend = tandem::make_cpu_backend(1);
    constexpr int64_t kBatch = 2;
    tandem::Replica replica(m, *backend, kBatch);
    replica.set_weights(m.initial_weights(1));
    const std::vector<float> input(static_cast<size_t>(m.input_shape().numel() * kBatch), 0.5f);
    replica.load_input(input.data(), kBatch);
    for (bool training : {true, false}) {
      tandem::StepContext ctx;
      ctx.backend = backend.get();
      ctx.batch = kBatch;
      ctx.training = training;
      ctx.want_probs = !training;
      replica.forward(ctx);
    }
  });
  return 0;
}
