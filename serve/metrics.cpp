#include "serve/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sstream>

namespace tandem::serve {
namespace {

// TF Serving's request-latency buckets: 10 µs growing by 1.8x, 33 buckets.
prometheus::Histogram::BucketBoundaries latency_buckets() {
  prometheus::Histogram::BucketBoundaries b;
  double v = 10;
  for (int i = 0; i < 33; ++i, v *= 1.8) b.push_back(v);
  return b;
}

}  // namespace

ServerMetrics::ServerMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  request_count_ = &prometheus::BuildCounter()
                        .Name(":tensorflow:serving:request_count")
                        .Help("The total number of requests.")
                        .Register(*registry_);
  request_latency_ = &prometheus::BuildHistogram()
                          .Name(":tensorflow:serving:request_latency")
                          .Help("Distribution of wall time (in microseconds) for Tensorflow Serving request.")
                          .Register(*registry_);
  load_count_ = &prometheus::BuildCounter()
                     .Name(":tandem:serving:model_load_count")
                     .Help("Version loads, by outcome (status OK or ERROR).")
                     .Register(*registry_);
  load_latency_ = &prometheus::BuildHistogram()
                       .Name(":tandem:serving:model_load_latency")
                       .Help("Time to read, verify and warm up a version (microseconds).")
                       .Register(*registry_);
  unload_count_ = &prometheus::BuildCounter()
                       .Name(":tandem:serving:model_unload_count")
                       .Help("Versions unloaded (freed after their last request).")
                       .Register(*registry_);
  rows_ = &prometheus::BuildCounter()
               .Name(":tandem:serving:rows_computed")
               .Help("Input rows run through a forward pass.")
               .Register(*registry_);
  batch_size_ = &prometheus::BuildHistogram()
                     .Name(":tensorflow:serving:batching_session:input_batch_size")
                     .Help("Rows of the requests in each batch, before padding.")
                     .Register(*registry_);
  padding_size_ = &prometheus::BuildHistogram()
                       .Name(":tensorflow:serving:batching_session:padding_size")
                       .Help("Padding rows added to each batch to reach an allowed batch size.")
                       .Register(*registry_);
  queuing_latency_ = &prometheus::BuildHistogram()
                          .Name(":tensorflow:serving:batching_session:queuing_latency")
                          .Help("Time a request waited in the batch queue (microseconds).")
                          .Register(*registry_);
  compute_latency_ = &prometheus::BuildHistogram()
                          .Name(":tandem:serving:batch_compute_latency")
                          .Help("Forward-pass time of each batch (microseconds).")
                          .Register(*registry_);
  padding_rows_ = &prometheus::BuildCounter()
                       .Name(":tandem:serving:padding_rows")
                       .Help("Padding rows computed and dropped.")
                       .Register(*registry_);
}

ServerMetrics::~ServerMetrics() = default;

void ServerMetrics::batch(const std::string& model, int64_t version, int64_t rows, int64_t padded_rows,
                          const std::vector<double>& queue_micros, double compute_micros) {
  static const prometheus::Histogram::BucketBoundaries sizes{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  static const auto buckets = latency_buckets();
  const prometheus::Labels labels{{"model_name", model}, {"version", std::to_string(version)}};
  batch_size_->Add(labels, sizes).Observe(static_cast<double>(rows));
  padding_size_->Add(labels, sizes).Observe(static_cast<double>(padded_rows - rows));
  auto& queued = queuing_latency_->Add(labels, buckets);
  for (double q : queue_micros) queued.Observe(q);
  compute_latency_->Add(labels, buckets).Observe(compute_micros);
  padding_rows_->Add(labels).Increment(static_cast<double>(padded_rows - rows));
}

void ServerMetrics::request(const std::string& model, const std::string& version, const std::string& api,
                            const std::string& entrypoint, const char* status, double micros) {
  request_count_->Add({{"model_name", model}, {"version", version}, {"status", status}}).Increment();
  static const auto buckets = latency_buckets();
  request_latency_->Add({{"model_name", model}, {"version", version}, {"API", api}, {"entrypoint", entrypoint}}, buckets)
      .Observe(micros);
}

void ServerMetrics::load(const std::string& model, int64_t version, bool ok, double seconds) {
  const std::string v = std::to_string(version);
  load_count_->Add({{"model_name", model}, {"version", v}, {"status", ok ? "OK" : "ERROR"}}).Increment();
  static const auto buckets = latency_buckets();
  if (ok) load_latency_->Add({{"model_name", model}, {"version", v}}, buckets).Observe(seconds * 1e6);
}

void ServerMetrics::unload(const std::string& model, int64_t version) {
  unload_count_->Add({{"model_name", model}, {"version", std::to_string(version)}}).Increment();
}

void ServerMetrics::rows_computed(const std::string& model, int64_t version, int64_t rows) {
  rows_->Add({{"model_name", model}, {"version", std::to_string(version)}}).Increment(static_cast<double>(rows));
}

std::string ServerMetrics::text() const {
  prometheus::TextSerializer serializer;
  std::ostringstream out;
  serializer.Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace tandem::serve
