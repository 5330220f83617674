#!/usr/bin/env python3
"""Serving benchmark for `tandem serve` without batching (issue: the server).

Trains the mlp and the cnn briefly (the weights do not change the cost), exports them into one
served tree, starts `tandem serve` on loopback with both models, and measures:
  - load time of a version (read + verify + warm up; the server's own log line);
  - time from a new version directory (the moment `tandem export` has renamed it into place) to the
    first gRPC answer from that version, with --file_system_poll_wait_seconds POLL;
  - requests/s and p50/p99/p99.9 latency at concurrency 1 and 16 for both models, REST (wrk from
    Debian with benchmarks/serve/predict.lua, one image per request) and gRPC (build/benchmarks/
    grpc_load, closed loop, one image per request, tensor_content), ROUNDS rounds interleaved;
    medians with the min..max spread.
The load generators share the machine's cores with the server: on a 2-core VM that is part of what
is measured.

Usage: serve_bench.py [--tandem build/tandem] [--grpc-load build/benchmarks/grpc_load]
                      [--seconds 8] [--rounds 3] [--poll 1] [--json OUT.json]"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", default=os.path.join(ROOT, "build/tandem"))
    ap.add_argument("--grpc-load", default=os.path.join(ROOT, "build/benchmarks/grpc_load"))
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--swaps", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    work = tempfile.mkdtemp(prefix="tandem-serve-bench-")
    server = None
    try:
        base = os.path.join(work, "serving")
        for m in ("mlp", "cnn"):
            run([a.tandem, "train", "--model", m, "--epochs", "1", "--train-samples", "2000", "--output",
                 os.path.join(work, m)])
            run([a.tandem, "export", os.path.join(work, m, "model/1"), "--to", os.path.join(base, m), "--format", "native"])
        config = os.path.join(work, "models.config")
        with open(config, "w") as f:
            f.write("model_config_list {\n" + "".join(
                f'  config {{ name: "{m}" base_path: "{os.path.join(base, m)}" }}\n' for m in ("mlp", "cnn")) + "}\n")
        grpc_port, rest_port = free_port(), free_port()
        log_path = os.path.join(work, "serve.log")
        log = open(log_path, "w")
        server = subprocess.Popen([a.tandem, "serve", "--host", "127.0.0.1", "--port", str(grpc_port), "--rest_api_port",
                                   str(rest_port), "--model_config_file", config, "--file_system_poll_wait_seconds",
                                   str(a.poll)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while not re.search(r"tandem serve: serving$", open(log_path).read(), re.M):
            if server.poll() is not None or time.time() > deadline:
                sys.exit("server did not start:\n" + open(log_path).read())
            time.sleep(0.1)
        loads = {m: [float(x) for x in re.findall(rf"model '{m}' version \d+: AVAILABLE \(loaded and warmed up in (\d+) ms",
                                                  open(log_path).read())] for m in ("mlp", "cnn")}

        # Swap: export a new version and wait for the first answer from it.
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        import numpy as np
        swap_s = {}
        for m in ("mlp", "cnn"):
            times = []
            for i in range(a.swaps):
                req = predict_pb2.PredictRequest()
                req.model_spec.name = m
                t = req.inputs["input"]
                t.dtype = 1
                for d in (1, 28, 28, 1):
                    t.tensor_shape.dim.add().size = d
                t.tensor_content = np.zeros((1, 28, 28, 1), np.float32).tobytes()
                out = run([a.tandem, "export", os.path.join(work, m, "model/1"), "--to", os.path.join(base, m),
                           "--format", "native"]).stdout
                t0 = time.time()
                version = int(re.search(r"/(\d+)\s*$", out.strip()).group(1))
                while stub.Predict(req, timeout=10).model_spec.version.value != version:
                    if time.time() - t0 > 60:
                        sys.exit(f"{m} version {version} never answered")
                times.append(time.time() - t0)
            swap_s[m] = times
        loads = {m: [float(x) for x in re.findall(rf"model '{m}' version \d+: AVAILABLE \(loaded and warmed up in (\d+) ms",
                                                  open(log_path).read())] for m in ("mlp", "cnn")}

        # Throughput, interleaved.
        body = os.path.join(work, "body.json")
        rng = np.random.default_rng(0)
        img = (rng.integers(0, 256, (1, 28, 28, 1)).astype(np.float32) / np.float32(255)).tolist()
        with open(body, "w") as f:
            json.dump({"instances": img}, f)
        results = {}
        for r in range(a.rounds):
            for m in ("mlp", "cnn"):
                for c in (1, 16):
                    env = dict(os.environ, TANDEM_BODY=body)
                    out = run(["wrk", f"-t{min(c, 2)}", f"-c{c}", f"-d{int(round(a.seconds))}s", "--timeout", "10s", "-s",
                               os.path.join(ROOT, "benchmarks/serve/predict.lua"),
                               f"http://127.0.0.1:{rest_port}/v1/models/{m}:predict"], env=env).stdout
                    results.setdefault((m, "REST", c), []).append(json.loads(out.strip().splitlines()[-1]))
                    out = run([a.grpc_load, f"127.0.0.1:{grpc_port}", m, str(c), str(a.seconds)]).stdout
                    results.setdefault((m, "gRPC", c), []).append(json.loads(out.strip().splitlines()[-1]))

        def med(xs):
            return statistics.median(xs)

        print(f"\nversion load time (read, verify, warm up; ms): "
              + ", ".join(f"{m} median {med(v):.0f} (n={len(v)}, {min(v):.0f}..{max(v):.0f})" for m, v in loads.items()))
        print(f"new version directory -> first answer from it (poll every {a.poll:g} s; s): "
              + ", ".join(f"{m} median {med(v):.2f} ({min(v):.2f}..{max(v):.2f})" for m, v in swap_s.items()))
        print("\n| model | API | concurrency | requests/s (median, min..max) | p50 ms | p99 ms | p99.9 ms | errors |")
        print("|---|---|---|---|---|---|---|---|")
        table = []
        for (m, api, c), rs in sorted(results.items()):
            rps = [x["rps"] for x in rs]
            row = dict(model=m, api=api, concurrency=c, rps=med(rps), rps_min=min(rps), rps_max=max(rps),
                       p50_ms=med([x["p50_us"] for x in rs]) / 1e3, p99_ms=med([x["p99_us"] for x in rs]) / 1e3,
                       p999_ms=med([x["p999_us"] for x in rs]) / 1e3, errors=sum(x["errors"] for x in rs))
            table.append(row)
            print(f"| {m} | {api} | {c} | {row['rps']:.0f} ({row['rps_min']:.0f}..{row['rps_max']:.0f}) | "
                  f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['p999_ms']:.2f} | {row['errors']} |")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(dict(load_ms=loads, swap_s=swap_s, throughput=table), f, indent=1)
    finally:
        if server and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
