-- wrk script: POSTs the body in $TANDEM_BODY (one Fashion-MNIST image as a TF Serving :predict
-- request) and prints one JSON line of totals and latency percentiles (microseconds).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("TANDEM_BODY"), "r"))
wrk.body = f:read("*a")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "rps": %.1f, "p50_us": %d, "p99_us": %d, "p999_us": %d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9)))
end
