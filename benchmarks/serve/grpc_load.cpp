// Closed-loop gRPC load generator for tandem serve (or any TF Serving): CONCURRENCY threads, each
// with its own channel, send PredictionService/Predict with ROWS Fashion-MNIST-shaped rows
// (tensor_content) back to back for SECONDS, after one warm-up second. Prints one JSON line:
// requests, errors, requests/s, and p50/p99/p99.9 latency in microseconds.
//
// With TIMELINE, every measured request is also written there as a line "SECONDS_SINCE_START
// LATENCY_US OK" (for latency around an event, such as a version swap).
//
// Usage: grpc_load HOST:PORT MODEL CONCURRENCY SECONDS [ROWS [TIMELINE]]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tensorflow_serving/apis/prediction_service.grpc.pb.h"

namespace tfs = tensorflow::serving;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: grpc_load HOST:PORT MODEL CONCURRENCY SECONDS [ROWS [TIMELINE]]\n");
    return 2;
  }
  const std::string address = argv[1], model = argv[2];
  const int concurrency = std::max(1, std::atoi(argv[3]));
  const double seconds = std::atof(argv[4]);
  const int rows = argc > 5 ? std::max(1, std::atoi(argv[5])) : 1;

  tfs::PredictRequest request;
  request.mutable_model_spec()->set_name(model);
  tensorflow::TensorProto& t = (*request.mutable_inputs())["input"];
  t.set_dtype(tensorflow::DT_FLOAT);
  for (int64_t d : {int64_t{rows}, int64_t{28}, int64_t{28}, int64_t{1}}) t.mutable_tensor_shape()->add_dim()->set_size(d);
  std::vector<float> pixels(static_cast<size_t>(rows) * 784);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>((i * 37) % 256) / 255.f;
  t.set_tensor_content(std::string(reinterpret_cast<const char*>(pixels.data()), pixels.size() * 4));

  std::atomic<bool> measuring{false}, stop{false};
  std::atomic<int64_t> errors{0};
  std::mutex first_error_mu;
  std::string first_error;  // the first failed call's code and message, for the report
  struct Sample {
    double at_s, us;
    bool ok;
  };
  std::vector<std::vector<Sample>> latencies(static_cast<size_t>(concurrency));
  const Clock::time_point t_begin = Clock::now() + std::chrono::seconds(1);  // when measuring starts
  std::vector<std::thread> threads;
  for (int i = 0; i < concurrency; ++i) {
    threads.emplace_back([&, i] {
      grpc::ChannelArguments args;
      args.SetInt("grpc.use_local_subchannel_pool", 1);  // one connection per thread
      auto stub = tfs::PredictionService::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
      while (!stop) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        tfs::PredictResponse response;
        const auto t0 = Clock::now();
        const grpc::Status s = stub->Predict(&ctx, request, &response);
        const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
        if (!measuring) continue;
        if (!s.ok()) {
          ++errors;
          std::lock_guard<std::mutex> lock(first_error_mu);
          if (first_error.empty()) first_error = std::to_string(s.error_code()) + " " + s.error_message();
        }
        latencies[static_cast<size_t>(i)].push_back(
            {std::chrono::duration<double>(t0 - t_begin).count(), us, s.ok()});
      }
    });
  }
  std::this_thread::sleep_until(t_begin);
  measuring = true;
  const auto start = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  measuring = false;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  stop = true;
  for (auto& th : threads) th.join();
  std::vector<double> all;
  FILE* timeline = argc > 6 ? std::fopen(argv[6], "w") : nullptr;
  if (argc > 6 && !timeline) {
    std::fprintf(stderr, "grpc_load: cannot write %s\n", argv[6]);
    return 2;
  }
  for (auto& l : latencies)
    for (const Sample& x : l) {
      all.push_back(x.us);
      if (timeline) std::fprintf(timeline, "%.6f %.0f %d\n", x.at_s, x.us, x.ok ? 1 : 0);
    }
  if (timeline) std::fclose(timeline);
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) {
    return all.empty() ? 0.0 : all[std::min(all.size() - 1, static_cast<size_t>(p / 100.0 * all.size()))];
  };
  if (!first_error.empty()) std::fprintf(stderr, "grpc_load: first error: %s\n", first_error.c_str());
  std::printf("{\"requests\": %zu, \"errors\": %lld, \"rps\": %.1f, \"p50_us\": %.0f, \"p99_us\": %.0f, \"p999_us\": %.0f}\n",
              all.size(), static_cast<long long>(errors.load()), all.size() / elapsed, pct(50), pct(99), pct(99.9));
  return 0;
}
