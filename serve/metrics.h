// Prometheus metrics of the server, under TF Serving's names where it has them
// (":tensorflow:serving:request_count{model_name,status}", ":tensorflow:serving:request_latency"
// histogram in microseconds) with, beyond TF Serving (its #1970), a per-version label and Tandem's
// own series for loads, unloads, load latency and computed rows. Served in the text exposition
// format on the REST port when the monitoring config enables it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace prometheus {
class Registry;
class Counter;
template <typename T>
class Family;
class Histogram;
}  // namespace prometheus

namespace tandem::serve {

class ServerMetrics {
 public:
  ServerMetrics();
  ~ServerMetrics();
  // One answered request. `version` is "" when none was resolved; `api` "predict", "metadata",
  // "status", "classify", ...; `entrypoint` "REST", "GRPC" or "V2".
  void request(const std::string& model, const std::string& version, const std::string& api,
               const std::string& entrypoint, const char* status, double micros);
  void load(const std::string& model, int64_t version, bool ok, double seconds);
  void unload(const std::string& model, int64_t version);
  void rows_computed(const std::string& model, int64_t version, int64_t rows);
  // One batch of the batcher (beyond TF Serving, #1529: batch sizes, padding and both latencies).
  void batch(const std::string& model, int64_t version, int64_t rows, int64_t padded_rows,
             const std::vector<double>& queue_micros, double compute_micros);
  std::string text() const;  // the exposition format

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* request_count_;
  prometheus::Family<prometheus::Histogram>* request_latency_;
  prometheus::Family<prometheus::Counter>* load_count_;
  prometheus::Family<prometheus::Histogram>* load_latency_;
  prometheus::Family<prometheus::Counter>* unload_count_;
  prometheus::Family<prometheus::Counter>* rows_;
  prometheus::Family<prometheus::Histogram>* batch_size_;
  prometheus::Family<prometheus::Histogram>* padding_size_;
  prometheus::Family<prometheus::Histogram>* queuing_latency_;
  prometheus::Family<prometheus::Histogram>* compute_latency_;
  prometheus::Family<prometheus::Counter>* padding_rows_;
};

}  // namespace tandem::serve
