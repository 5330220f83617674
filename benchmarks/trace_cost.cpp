// The cost of one engine/trace.h Span, recording and not: what --timeline adds per phase of a step.
//   build/benchmarks/trace_cost [SPANS]      (default 2,000,000; prints ns per span, best of 5)
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "engine/trace.h"

namespace {

double ns_per_span(long spans) {
  double best = 1e30;
  for (int round = 0; round < 5; ++round) {
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < spans; ++i) tandem::trace::Span span("forward", i);
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, ns / static_cast<double>(spans));
    if (tandem::trace::enabled()) tandem::trace::start();  // drop what this round kept
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const long spans = argc > 1 ? std::atol(argv[1]) : 2000000;
  if (spans <= 0) {
    std::fprintf(stderr, "trace_cost: SPANS must be a positive number\n");
    return 2;
  }
  const double off = ns_per_span(spans);
  tandem::trace::start();
  const double on = ns_per_span(spans);
  tandem::trace::stop();
  std::printf("trace::Span: %.1f ns recording, %.2f ns not recording (best of 5 x %ld spans)\n", on, off, spans);
  return 0;
}
