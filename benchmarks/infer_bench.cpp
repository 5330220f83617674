// Inference throughput of a saved model version on the CPU backend: the forward pass alone (what
// `tandem serve` runs per batch), planned once for BATCH rows, timed over ITERS passes after a
// warm-up. Prints one JSON line: batch, threads, samples/s and the median per-pass latency (µs).
//
// Usage: infer_bench MODEL_VERSION_DIR BATCH ITERS THREADS
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "engine/backend.h"
#include "engine/replica.h"
#include "storage/loaded_model.h"
#include "kernels/backends.h"

using namespace tandem;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: infer_bench MODEL_VERSION_DIR BATCH ITERS THREADS\n");
    return 2;
  }
  const int64_t batch = std::atoll(argv[2]);
  const int iters = std::atoi(argv[3]), threads = std::atoi(argv[4]);
  LoadedModel m = load_model(argv[1]);
  auto backend = make_backend(Device::parse("cpu"), threads);
  backend->set_inference_only(true);  // as tandem serve runs it
  Replica r(m.model, *backend, batch);
  r.set_weights(m.arena);
  std::vector<float> in(static_cast<size_t>(batch * m.model.input_shape().numel()));
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>((i * 37) % 256) / 255.f;
  std::vector<float> out(static_cast<size_t>(batch * m.model.num_classes()));
  StepContext ctx;
  ctx.backend = backend.get();
  ctx.batch = batch;
  ctx.want_probs = true;
  auto pass = [&] {
    r.load_input(in.data(), batch);
    const float* p = r.forward(ctx);
    backend->download(out.data(), p, sizeof(float) * out.size());
  };
  for (int i = 0; i < std::max(3, iters / 10); ++i) pass();
  std::vector<double> us;
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) {
    const auto a = Clock::now();
    pass();
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - a).count());
  }
  const double total = std::chrono::duration<double>(Clock::now() - t0).count();
  std::sort(us.begin(), us.end());
  std::printf("{\"batch\": %lld, \"threads\": %d, \"samples_per_s\": %.1f, \"median_us\": %.1f}\n",
              static_cast<long long>(batch), threads, batch * iters / total, us[us.size() / 2]);
  return 0;
}
