#!/usr/bin/env python3
"""Two `tandem` binaries' REST throughput side by side (e.g. before and after a transport change):
wrk with benchmarks/serve/predict.lua (one image per :predict, keep-alive, closed loop) against each
binary serving the same briefly trained mlp, at concurrency 1, 8 and 64, ROUNDS rounds with the
order alternating; prints medians, min..max and the ratio B/A.

Usage: rest_transport_cmp.py --a OLD/tandem --b NEW/tandem [--seconds 5] [--rounds 3]
(RESULTS.md's transport table: --a a build of 38563c4's serve/http_server.cpp, --b build/tandem.)"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--a", required=True, help="the baseline tandem binary")
ap.add_argument("--b", required=True, help="the tandem binary compared with it")
ap.add_argument("--seconds", type=int, default=5)
ap.add_argument("--rounds", type=int, default=3)
args = ap.parse_args()

sys.argv = [sys.argv[0], args.b, "none"]  # serve_check's helpers, without running a check
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "serve"))
import serve_check as sc  # noqa: E402

CONCURRENCY = (1, 8, 64)


def main():
    work = tempfile.mkdtemp(prefix="tandem-rest-cmp-")
    try:
        base = os.path.join(work, "models", "mlp")
        sc.export(sc.make_model(work, "mlp"), base)
        body = os.path.join(work, "body.json")
        with open(body, "w") as f:
            json.dump({"instances": sc.test_images()[:1].tolist()}, f)
        binaries = [("A", args.a), ("B", args.b)]
        res = {name: {c: [] for c in CONCURRENCY} for name, _ in binaries}
        for rnd in range(args.rounds):
            for name, binary in (binaries if rnd % 2 == 0 else binaries[::-1]):
                port, grpc_port = sc.free_port(), sc.free_port()
                proc = subprocess.Popen([binary, "serve", "--port", str(grpc_port), "--rest_api_port", str(port),
                                         "--model_name", "mlp", "--model_base_path", base],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    deadline = time.time() + 60
                    while time.time() < deadline:
                        try:
                            if sc.requests.get(f"http://127.0.0.1:{port}/v1/models/mlp", timeout=2).ok:
                                break
                        except sc.requests.RequestException:
                            time.sleep(0.1)
                    for c in CONCURRENCY:
                        out = subprocess.run(
                            ["wrk", f"-t{min(c, 2)}", f"-c{c}", f"-d{args.seconds}s", "--timeout", "10s", "-s",
                             os.path.join(HERE, "predict.lua"), f"http://127.0.0.1:{port}/v1/models/mlp:predict"],
                            capture_output=True, text=True, env={**os.environ, "TANDEM_BODY": body}).stdout
                        res[name][c].append(json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1]))
                finally:
                    proc.terminate()
                    proc.wait()
        for c in CONCURRENCY:
            a = [r["rps"] for r in res["A"][c]]
            b = [r["rps"] for r in res["B"][c]]
            errors = sum(r["errors"] for name in res for r in res[name][c])
            print(f"c{c}: A {statistics.median(a):.0f} ({min(a):.0f}..{max(a):.0f}) req/s, "
                  f"B {statistics.median(b):.0f} ({min(b):.0f}..{max(b):.0f}) req/s, "
                  f"B/A {statistics.median(b) / statistics.median(a):.2f}, "
                  f"p99 A {statistics.median(r['p99_us'] for r in res['A'][c]) / 1000:.1f} ms "
                  f"B {statistics.median(r['p99_us'] for r in res['B'][c]) / 1000:.1f} ms, errors {errors}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


main()
