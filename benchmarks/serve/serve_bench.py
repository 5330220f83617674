#!/usr/bin/env python3
"""Serving benchmark: `tandem serve` with and without batching, side by side with the server users
would otherwise run on this machine, KServe's Python model server with ONNX Runtime on our exported
model.onnx (benchmarks/serve/kserve_onnx.py, in its own venv from benchmarks/serve/setup_peers.sh).

Trains the mlp and the cnn briefly (the weights do not change the cost), exports them (native and
onnx) into one served tree, starts four servers on loopback (Tandem without batching, with its
default of one single-threaded replica per core and with one replica on all cores; Tandem with
--enable_batching and BATCHING's parameters; KServe), and measures, ROUNDS rounds interleaved:
  - requests/s and p50/p99/p99.9 latency at each CONCURRENCY for both models: REST with wrk
    (Debian; benchmarks/serve/predict.lua posts one Fashion-MNIST image per :predict request,
    keep-alive, closed loop) against all three servers; gRPC Predict with build/benchmarks/grpc_load
    (C++, closed loop, one channel per client, tensor_content) against both Tandem servers;
  - the limit: in-process forward passes at batch 64 (build/benchmarks/infer_bench, same threads);
  - a version swap of the cnn under gRPC load at concurrency 16 on the batching server: p99 in the
    10 s around the swap against the p99 of a steady run of the same length; failed requests;
  - memory: resident set of a server with one cnn version, under load and at its peak during a
    swap (VmRSS sampled every 5 ms), and after the old version is freed; KServe's beside it;
  - version load time (the server's log) and new version directory -> first answer from it.
The load generators share the machine's cores with the servers: on a 2-core VM that is part of what
is measured, for every server alike. Medians over the rounds, with the min..max spread.

Usage: serve_bench.py [--tandem build/tandem] [--seconds 6] [--rounds 3] [--concurrency 1,8,64]
                      [--batching max_batch_size=64,batch_timeout_micros=0,num_batch_threads=2]
                      [--no-peer] [--json OUT.json]"""
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
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = ("mlp", "cnn")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def med(xs):
    return statistics.median(xs)


def wait_http(url, proc, log_path, timeout=90):
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{open(log_path).read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    sys.exit(f"server did not become ready:\n{open(log_path).read()[-3000:]}")


class Servers:
    """Every process started here, stopped (SIGTERM, then SIGKILL) by its PID at the end."""

    def __init__(self, work):
        self.work, self.procs = work, []

    def tandem(self, tandem, config, extra, name):
        grpc_port, rest_port = free_port(), free_port()
        log_path = os.path.join(self.work, f"{name}.log")
        p = subprocess.Popen([tandem, "serve", "--host", "127.0.0.1", "--port", str(grpc_port), "--rest_api_port",
                              str(rest_port), "--model_config_file", config] + extra,
                             stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        models = re.findall(r'name: "(\w+)"', open(config).read())
        for m in models:
            wait_http(f"http://127.0.0.1:{rest_port}/v1/models/{m}", p, log_path)
        return dict(proc=p, grpc=grpc_port, rest=rest_port, log=log_path)

    def kserve(self, python, model, onnx, threads):
        port = free_port()
        log_path = os.path.join(self.work, f"kserve-{model}.log")
        p = subprocess.Popen([python, os.path.join(ROOT, "benchmarks/serve/kserve_onnx.py"), "--model_name", model,
                              "--onnx", onnx, "--threads", str(threads), "--http_port", str(port)],
                             stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        wait_http(f"http://127.0.0.1:{port}/v1/models/{model}", p, log_path)
        return dict(proc=p, rest=port, log=log_path)

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in self.procs:
            self.stop(p)


def wrk(url, c, seconds, body):
    out = run(["wrk", f"-t{min(c, 2)}", f"-c{c}", f"-d{int(round(seconds))}s", "--timeout", "10s", "-s",
               os.path.join(ROOT, "benchmarks/serve/predict.lua"), url], env=dict(os.environ, TANDEM_BODY=body)).stdout
    return json.loads(out.strip().splitlines()[-1])


def grpc_load(tool, port, model, c, seconds, timeline=None):
    cmd = [tool, f"127.0.0.1:{port}", model, str(c), str(seconds)] + (["1", timeline] if timeline else [])
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if r.stderr.strip():
        res["first_error"] = r.stderr.strip()[-200:]
    return res


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", default=os.path.join(ROOT, "build/tandem"))
    ap.add_argument("--grpc-load", default=os.path.join(ROOT, "build/benchmarks/grpc_load"))
    ap.add_argument("--infer-bench", default=os.path.join(ROOT, "build/benchmarks/infer_bench"))
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", default="1,8,64")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batching", default="max_batch_size=64,batch_timeout_micros=0,num_batch_threads=2,"
                                          "max_enqueued_batches=100")
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--swaps", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    conc = [int(c) for c in a.concurrency.split(",")]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    work = tempfile.mkdtemp(prefix="tandem-serve-bench-")
    servers = Servers(work)
    try:
        base = os.path.join(work, "serving")
        for m in MODELS:
            run([a.tandem, "train", "--model", m, "--epochs", "1", "--train-samples", "2000", "--output",
                 os.path.join(work, m)])
            run([a.tandem, "export", os.path.join(work, m, "model/1"), "--to", os.path.join(base, m), "--format",
                 "native,onnx"])

        def config_for(models, path):
            with open(path, "w") as f:
                f.write("model_config_list {\n" + "".join(
                    f'  config {{ name: "{m}" base_path: "{os.path.join(base, m)}" }}\n' for m in models) + "}\n")
            return path
        config = config_for(MODELS, os.path.join(work, "models.config"))
        params = os.path.join(work, "batching.config")
        with open(params, "w") as f:
            for kv in a.batching.split(","):
                k, v = kv.split("=")
                f.write(f"{k} {{ value: {v} }}\n")
        common = ["--threads", str(a.threads), "--file_system_poll_wait_seconds", str(a.poll)]
        batch_flags = ["--enable_batching", "--batching_parameters_file", params]
        systems = {"tandem": servers.tandem(a.tandem, config, common, "tandem"),
                   "tandem, 1 replica": servers.tandem(a.tandem, config, common + ["--replicas", "1"], "tandem-1-replica"),
                   "tandem+batching": servers.tandem(a.tandem, config, common + batch_flags, "tandem-batching")}
        peer = None
        if not a.no_peer:
            py = run([os.path.join(ROOT, "benchmarks/serve/setup_peers.sh")]).stdout.strip().splitlines()[-1]
            peer = {m: servers.kserve(py, m, os.path.join(base, m, "1", "model.onnx"), a.threads) for m in MODELS}
            systems["kserve+onnxruntime"] = None

        body = os.path.join(work, "body.json")
        rng = np.random.default_rng(0)
        img = (rng.integers(0, 256, (1, 28, 28, 1)).astype(np.float32) / np.float32(255)).tolist()
        with open(body, "w") as f:
            json.dump({"instances": img}, f)

        # Throughput, interleaved: every round runs every (model, concurrency, system, API).
        results = {}
        limit = {}
        for r in range(a.rounds):
            for m in MODELS:
                out = json.loads(run([a.infer_bench, os.path.join(base, m, "1"), "64", "30", str(a.threads)]).stdout)
                limit.setdefault(m, []).append(out["samples_per_s"])
                for c in conc:
                    for name, srv in systems.items():
                        port = peer[m]["rest"] if srv is None else srv["rest"]
                        results.setdefault((m, name, "REST", c), []).append(
                            wrk(f"http://127.0.0.1:{port}/v1/models/{m}:predict", c, a.seconds, body))
                        if srv is not None:
                            results.setdefault((m, name, "gRPC", c), []).append(
                                grpc_load(a.grpc_load, srv["grpc"], m, c, a.seconds))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
        memory = {}
        if peer:
            memory["kserve+onnxruntime (cnn, after the runs)"] = rss_kb(peer["cnn"]["proc"].pid) / 1024
        for name in ("tandem", "tandem+batching"):
            memory[f"{name} (mlp and cnn, after the runs)"] = rss_kb(systems[name]["proc"].pid) / 1024
        servers.stop_all()
        servers.procs.clear()

        # Swap under load: one cnn version on the batching server, gRPC at concurrency 16.
        cnn_config = config_for(["cnn"], os.path.join(work, "cnn.config"))
        swap_base = os.path.join(base, "cnn")
        s = servers.tandem(a.tandem, cnn_config, common + batch_flags, "swap")
        memory["tandem+batching, one cnn version, idle"] = rss_kb(s["proc"].pid) / 1024
        swap_rows, steady_p99, window_p99, swap_fail, peaks, after = [], [], [], 0, [], []
        span = 12
        for i in range(a.swaps):
            tl = os.path.join(work, f"steady-{i}.txt")
            grpc_load(a.grpc_load, s["grpc"], "cnn", 16, span, tl)
            steady = [float(x.split()[1]) for x in open(tl)]
            steady_p99.append(pct(steady, 99))
            memory.setdefault("under load", []).append(rss_kb(s["proc"].pid) / 1024)
            tl = os.path.join(work, f"swap-{i}.txt")
            t0 = time.time()
            load = threading.Thread(target=lambda: grpc_load(a.grpc_load, s["grpc"], "cnn", 16, span, tl))
            load.start()
            time.sleep(1.0 + span / 2 - 1.0)  # the swap starts about a second before the middle
            peak, stop = [0], threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_kb(s["proc"].pid))
                    time.sleep(0.005)
            sampler = threading.Thread(target=sample)
            sampler.start()
            out = run([a.tandem, "export", os.path.join(work, "cnn", "model/1"), "--to", swap_base,
                       "--format", "native"]).stdout
            swap_at = time.time() - t0 - 1.0
            load.join()
            stop.set()
            sampler.join()
            peaks.append(peak[0] / 1024)
            after.append(rss_kb(s["proc"].pid) / 1024)
            lines = [x.split() for x in open(tl)]
            win = [float(us) for at, us, ok in lines if swap_at - 5 <= float(at) <= swap_at + 5]
            swap_fail += sum(1 for *_, ok in lines if ok != "1")
            window_p99.append(pct(win, 99))
            version = int(re.search(r"/(\d+)\s*$", out.strip()).group(1))
            swap_rows.append(version)
        memory["under load"] = med(memory["under load"])
        memory["peak during a swap"] = med(peaks)
        memory["after the swap (old version freed)"] = med(after)
        served = re.findall(r"model 'cnn' version (\d+): AVAILABLE", open(s["log"]).read())
        servers.stop(s["proc"])

        # New version directory -> first answer from it, and load times (no load running).
        s = servers.tandem(a.tandem, config, common, "first-answer")
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{s['grpc']}"))
        first_answer = {}
        for m in MODELS:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = m
            t = req.inputs["input"]
            t.dtype = 1
            for d in (1, 28, 28, 1):
                t.tensor_shape.dim.add().size = d
            t.tensor_content = np.zeros((1, 28, 28, 1), np.float32).tobytes()
            for i in range(a.swaps):
                out = run([a.tandem, "export", os.path.join(work, m, "model/1"), "--to", os.path.join(base, m),
                           "--format", "native"]).stdout
                t0 = time.time()
                version = int(re.search(r"/(\d+)\s*$", out.strip()).group(1))
                while stub.Predict(req, timeout=10).model_spec.version.value != version:
                    if time.time() - t0 > 60:
                        sys.exit(f"{m} version {version} never answered")
                first_answer.setdefault(m, []).append(time.time() - t0)
        loads = {m: [float(x) for x in re.findall(rf"model '{m}' version \d+: AVAILABLE \(loaded and warmed up in (\d+) ms",
                                                  open(s["log"]).read())] for m in MODELS}
        servers.stop(s["proc"])

        print(f"\nthreads {a.threads}; batching: {a.batching}; {a.rounds} rounds of {a.seconds} s, interleaved")
        print("version load time (read, verify, warm up; ms): " +
              ", ".join(f"{m} median {med(v):.0f} ({min(v):.0f}..{max(v):.0f})" for m, v in loads.items()))
        print(f"new version directory -> first answer from it (poll every {a.poll:g} s; s): " +
              ", ".join(f"{m} median {med(v):.2f} ({min(v):.2f}..{max(v):.2f})" for m, v in first_answer.items()))
        print("in-process limit, forward passes at batch 64 (samples/s): " +
              ", ".join(f"{m} {med(v):.0f} ({min(v):.0f}..{max(v):.0f})" for m, v in limit.items()))
        print("\n| model | server | API | concurrency | requests/s (median, min..max) | p50 ms | p99 ms | p99.9 ms | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        table = []
        for (m, name, api, c), rs in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][3], kv[0][2], kv[0][1])):
            rps = [x["rps"] for x in rs]
            row = dict(model=m, server=name, api=api, concurrency=c, rps=med(rps), rps_min=min(rps), rps_max=max(rps),
                       p50_ms=med([x["p50_us"] for x in rs]) / 1e3, p99_ms=med([x["p99_us"] for x in rs]) / 1e3,
                       p999_ms=med([x["p999_us"] for x in rs]) / 1e3, errors=sum(x["errors"] for x in rs),
                       first_error=next((x["first_error"] for x in rs if "first_error" in x), None))
            table.append(row)
            print(f"| {m} | {name} | {api} | {c} | {row['rps']:.0f} ({row['rps_min']:.0f}..{row['rps_max']:.0f}) | "
                  f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['p999_ms']:.2f} | {row['errors']} |")

        def rps(m, name, api, c):
            return next((r["rps"] for r in table if (r["model"], r["server"], r["api"], r["concurrency"]) == (m, name, api, c)),
                        float("nan"))
        cmax = max(conc)
        print("\nratios (REST, medians):")
        for m in MODELS:
            best = max(rps(m, "tandem", "REST", cmax), rps(m, "tandem+batching", "REST", cmax))
            if peer:
                print(f"  {m}: Tandem (best of batching off/on) / KServe+ORT at concurrency {cmax}: "
                      f"{best / rps(m, 'kserve+onnxruntime', 'REST', cmax):.2f}x")
            print(f"  {m}: batching on / off at concurrency {cmax}: REST "
                  f"{rps(m, 'tandem+batching', 'REST', cmax) / rps(m, 'tandem', 'REST', cmax):.2f}x, gRPC "
                  f"{rps(m, 'tandem+batching', 'gRPC', cmax) / rps(m, 'tandem', 'gRPC', cmax):.2f}x")
            print(f"  {m}: served samples/s with batching at concurrency {cmax} / in-process limit: REST "
                  f"{rps(m, 'tandem+batching', 'REST', cmax) / med(limit[m]):.2f}, gRPC "
                  f"{rps(m, 'tandem+batching', 'gRPC', cmax) / med(limit[m]):.2f}")
        print(f"\nswap of the cnn under gRPC load at concurrency 16 (batching server, {a.swaps} swaps, versions "
              f"{served}): p99 in the 10 s around the swap {med(window_p99) / 1e3:.1f} ms "
              f"({min(window_p99) / 1e3:.1f}..{max(window_p99) / 1e3:.1f}) vs steady {med(steady_p99) / 1e3:.1f} ms "
              f"({min(steady_p99) / 1e3:.1f}..{max(steady_p99) / 1e3:.1f}): "
              f"{med(window_p99) / med(steady_p99):.2f}x; failed requests {swap_fail}")
        print("memory (resident set, MiB): " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(dict(load_ms=loads, first_answer_s=first_answer, limit=limit, throughput=table,
                               swap=dict(window_p99_us=window_p99, steady_p99_us=steady_p99, failed=swap_fail),
                               memory_mib=memory), f, indent=1)
    finally:
        servers.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
