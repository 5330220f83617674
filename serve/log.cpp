#include "serve/log.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace tandem::serve {
namespace {

std::mutex log_mu;

void write(const char* level, const std::string& line) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const long ms = static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
  std::lock_guard<std::mutex> lock(log_mu);
  std::fprintf(stderr, "%s.%03ldZ %s tandem serve: %s\n", stamp, ms, level, line.c_str());
  std::fflush(stderr);
}

}  // namespace

void log_info(const std::string& line) { write("I", line); }
void log_error(const std::string& line) { write("E", line); }

}  // namespace tandem::serve
