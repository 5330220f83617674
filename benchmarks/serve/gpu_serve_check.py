#!/usr/bin/env python3
"""tools/gpu-check's serving row: `tandem serve --device gpu:0` against `tandem serve` on the CPU,
same version directory. Standard library only (the GPU machine has no pip packages of ours).

  - answers: 64 requests of 1..8 rows (fixed pseudo-random pixels) to both servers over REST
    :predict; the largest |GPU - CPU| over every probability must be <= 1e-5;
  - requests/s: CONCURRENCY clients with keep-alive connections, one image per request, SECONDS
    each, against the CPU server, the GPU server, and the GPU server with batching
    (max_batch_size 64, batch_timeout_micros 0; a third server).
Prints one JSON line; exits 1 if the answers differ or a server fails.

Usage: gpu_serve_check.py TANDEM VERSION_DIR [--seconds 5] [--concurrency 8] [--device gpu:0]"""
import argparse
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tandem, base, work, name, extra):
    port = free_port()
    log = os.path.join(work, f"{name}.log")
    p = subprocess.Popen([tandem, "serve", "--host", "127.0.0.1", "--port", "0", "--rest_api_port", str(port),
                          "--model_name", "cnn", "--model_base_path", base] + extra,
                         stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if p.poll() is not None:
            sys.exit(f"{name} server exited:\n" + open(log).read()[-2000:])
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/v1/models/cnn")
            if c.getresponse().status == 200:
                return p, port
        except OSError:
            pass
        time.sleep(0.2)
    p.kill()
    sys.exit(f"{name} server did not start:\n" + open(log).read()[-2000:])


def predict(conn, rows):
    conn.request("POST", "/v1/models/cnn:predict", body=json.dumps({"instances": rows}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
    return json.loads(body)["predictions"]


def image(rng):
    return [[[rng.randrange(256) / 255.0] for _ in range(28)] for _ in range(28)]


def rps(port, concurrency, seconds, body):
    counts, errors = [0] * concurrency, []
    stop = time.time() + seconds

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.time() < stop:
            try:
                predict(conn, body)
                counts[i] += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(repr(e)[:200])
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ts = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.time() - t0), errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tandem")
    ap.add_argument("version_dir")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--device", default="gpu:0", help="the device under test (cpu checks this script itself)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tandem-gpu-serve-")
    procs = []
    try:
        base = os.path.join(work, "cnn")
        subprocess.run([a.tandem, "export", a.version_dir, "--to", base, "--format", "native"], check=True,
                       capture_output=True)
        params = os.path.join(work, "batching.config")
        open(params, "w").write("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 0 }\n"
                                "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\n")
        servers = {}
        for name, extra in (("cpu", ["--device", "cpu"]), ("gpu", ["--device", a.device]),
                            ("gpu+batching", ["--device", a.device, "--enable_batching", "--batching_parameters_file",
                                              params])):
            p, port = start(a.tandem, base, work, name, extra)
            procs.append(p)
            servers[name] = port
        rng = random.Random(5)
        conns = {k: http.client.HTTPConnection("127.0.0.1", v, timeout=60) for k, v in servers.items()}
        worst = 0.0
        for i in range(64):
            rows = [image(rng) for _ in range(1 + i % 8)]
            want = predict(conns["cpu"], rows)
            for name in ("gpu", "gpu+batching"):
                got = predict(conns[name], rows)
                worst = max(worst, max(abs(g - w) for gr, wr in zip(got, want) for g, w in zip(gr, wr)))
        body = [image(rng)]
        speed, errs = {}, []
        for name, port in servers.items():
            speed[name], e = rps(port, a.concurrency, a.seconds, body)
            errs += e
        out = {"max_abs_diff_gpu_vs_cpu": worst, "requests_per_s": {k: round(v, 1) for k, v in speed.items()},
               "concurrency": a.concurrency, "errors": len(errs), "first_error": errs[0] if errs else None}
        print(json.dumps(out))
        return 0 if worst <= 1e-5 and not errs else 1
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
