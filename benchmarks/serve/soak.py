#!/usr/bin/env python3
"""Soak of `tandem serve` (not in CI): MINUTES of mixed good and bad requests over REST and gRPC at
a steady rate, while a new version is exported and the oldest deleted every SWAP seconds and the
model config is reloaded (labels moved to the newest version) every RELOAD seconds.

It passes when:
  - the server never exits;
  - every good request is answered, and correctly: its probabilities equal, within 1e-6, those of
    the version that answered (gRPC and KServe v2 name it; REST v1 must match one of the versions
    present) — computed beforehand with `tandem predict` from the version's files;
  - every bad request gets the protocol's client error (HTTP 4xx with {"error": ...}; a gRPC code
    other than OK, INTERNAL or UNKNOWN), never a 5xx other than 503/504;
  - resident memory (VmRSS) just before the last swap is at most 5% above the value just before the
    second swap (after the first swap, as TF Serving #1664 / #2142 measure it), and the number of
    open file descriptors does not grow between those points.

Usage: soak.py [--tandem build/tandem] [--minutes 30] [--swap 120] [--reload 300] [--rate 40]
               [--json OUT.json]
Three mlp models are trained briefly and exported in turn as versions 1, 2, 3, ... ."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "serve"))

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--tandem", default=os.path.join(HERE, "..", "..", "build", "tandem"))
ap.add_argument("--minutes", type=float, default=30)
ap.add_argument("--swap", type=float, default=120, help="seconds between new versions")
ap.add_argument("--reload", type=float, default=300, help="seconds between config reloads")
ap.add_argument("--rate", type=float, default=40, help="requests per second in all (a quarter of them bad)")
ap.add_argument("--json", help="write the summary here")
args = ap.parse_args()

# serve_check's helpers (Server, train/export/reference, request builders) without running a check.
sys.argv = [sys.argv[0], args.tandem, "none"]
import grpc  # noqa: E402
from tensorflow_serving.apis import model_management_pb2, predict_pb2  # noqa: E402

import serve_check as sc  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


STARTED = []  # servers this script started: stopped by PID at the end, also when it fails


def main():
    work = tempfile.mkdtemp(prefix="tandem-soak-")
    x_all = sc.test_images()
    x = x_all[:4]
    srcs = [sc.make_model(work, "mlp", seed=s) for s in (11, 12, 13)]
    refs = [sc.reference(src, 4) for src in srcs]
    base = os.path.join(work, "serving", "soak")
    config_path = os.path.join(work, "models.config")
    version_src = {}  # version -> index into srcs

    def export_next(version):
        version_src[version] = version % 3  # before the export: the server may answer from it at once
        sc.export(srcs[version % 3], base, version)

    export_next(1)
    sc.write_config(config_path, [("soak", base, "latest { num_versions: 2 }", {})])
    server = sc.Server(work, ["--model_config_file", config_path, "--file_system_poll_wait_seconds", "1"])
    STARTED.append(server)
    pid = server.proc.pid

    stats = {"good": 0, "good_failed": 0, "bad": 0, "bad_wrong": 0, "swaps": 0, "reloads": 0}
    problems = []
    lock = threading.Lock()
    stop = threading.Event()

    def note(kind, detail):
        with lock:
            stats[kind] += 1
            if len(problems) < 50:
                problems.append(f"{time.strftime('%H:%M:%S')} {kind}: {detail}"[:300])

    def answer_ok(probs, version):
        if version is not None:
            if version not in version_src:
                return False
            return float(np.max(np.abs(probs - refs[version_src[version]]))) <= 1e-6
        return any(float(np.max(np.abs(probs - r))) <= 1e-6 for r in refs)

    body_v1 = json.dumps({"instances": x.tolist()})
    body_v2 = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                      "data": x.ravel().tolist()}]})
    bad_rest = [
        ("POST", "/v1/models/soak:predict", '{"instances": [[1, 2'),                       # truncated JSON
        ("POST", "/v1/models/soak:predict", json.dumps({"instances": [[0.5] * 10]})),     # wrong shape
        ("POST", "/v1/models/nope:predict", body_v1),                                     # unknown model
        ("POST", "/v1/models/soak/versions/999:predict", body_v1),                        # unknown version
        ("POST", "/v1/models/soak:predict", '{"instances": [1e999]}'),                     # overflow
        ("POST", "/v2/models/soak/infer", '{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32"}]}'),
        ("GET", "/v1/models/so\xffak", ""),                                                # bad UTF-8 name
        ("POST", "/v1/models/soak:predict", "x" * 5000),
    ]

    def bad_grpc_requests():
        r1 = sc.grpc_request("soak", x)
        r1.inputs["input"].dtype = 3  # DT_INT32
        r2 = sc.grpc_request("soak", x)
        r2.inputs["input"].tensor_shape.dim[1].size = 27
        r3 = sc.grpc_request("nope", x)
        r4 = predict_pb2.PredictRequest()
        r4.model_spec.name = "soak"
        return [r1, r2, r3, r4]
    bad_grpc = bad_grpc_requests()

    def client(i, period):
        sess = requests.Session()
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = sc.prediction_service_pb2_grpc.PredictionServiceStub(channel)
        n = 0
        next_at = time.time()
        while not stop.is_set():
            next_at += period
            kind = n % 8
            n += 1
            try:
                if kind in (1, 5):  # bad, 1 in 4
                    if i % 2 == 0:
                        method, path, body = bad_rest[(n // 8) % len(bad_rest)]
                        r = sess.request(method, server.url + requests.utils.quote(path, safe="/:"),
                                         data=body.encode("utf-8", "surrogateescape"), timeout=30)
                        ok = 400 <= r.status_code < 500 and "error" in r.json()
                        detail = f"{method} {path[:40]}: {r.status_code} {r.text[:100]}"
                    else:
                        try:
                            stub.Predict(bad_grpc[(n // 8) % len(bad_grpc)], timeout=30)
                            ok, detail = False, "a bad gRPC request succeeded"
                        except grpc.RpcError as e:
                            ok = e.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
                            detail = f"gRPC {e.code()}: {e.details()[:100]}"
                    with lock:
                        stats["bad"] += 1
                    if not ok:
                        note("bad_wrong", detail)
                else:
                    which = (n + i) % 3
                    if which == 0:
                        resp = stub.Predict(sc.grpc_request("soak", x), timeout=30)
                        probs, version = sc.grpc_probs(resp), resp.model_spec.version.value
                    elif which == 1:
                        r = sess.post(f"{server.url}/v2/models/soak/infer", data=body_v2, timeout=30)
                        if r.status_code != 200:
                            raise RuntimeError(f"v2 HTTP {r.status_code}: {r.text[:100]}")
                        out = r.json()["outputs"][0]
                        probs = np.array(out["data"], np.float32).reshape(out["shape"])
                        version = int(r.json()["model_version"])
                    else:
                        r = sess.post(f"{server.url}/v1/models/soak:predict", data=body_v1, timeout=30)
                        if r.status_code != 200:
                            raise RuntimeError(f"v1 HTTP {r.status_code}: {r.text[:100]}")
                        probs, version = np.array(r.json()["predictions"], np.float32), None
                    with lock:
                        stats["good"] += 1
                    if not answer_ok(probs, version):
                        note("good_failed", f"wrong answer from version {version}")
            except Exception as e:  # noqa: BLE001 - every failure of a good request counts
                note("good_failed", repr(e)[:200])
            time.sleep(max(0.0, next_at - time.time()))
        channel.close()

    threads_n = 4
    clients = [threading.Thread(target=client, args=(i, threads_n / args.rate)) for i in range(threads_n)]
    start = time.time()
    for t in clients:
        t.start()

    samples = []  # (seconds, event, rss KiB, fds)
    version = 1
    next_swap, next_reload, next_sample = start + args.swap, start + args.reload, start
    end = start + args.minutes * 60
    reload_stub = sc.model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    while time.time() < end:
        if server.proc.poll() is not None:
            problems.append(f"the server exited with {server.proc.returncode}")
            break
        now = time.time()
        if now >= next_sample:
            samples.append((round(now - start, 1), "sample", rss_kib(pid), fd_count(pid)))
            next_sample += 10
        if now >= next_swap:
            samples.append((round(now - start, 1), "before swap", rss_kib(pid), fd_count(pid)))
            version += 1
            export_next(version)
            old = version - 3  # keep the two that latest{2} serves, delete the one before
            if old >= 1 and os.path.isdir(os.path.join(base, str(old))):
                shutil.rmtree(os.path.join(base, str(old)))
            stats["swaps"] += 1
            next_swap += args.swap
        if now >= next_reload:
            req = model_management_pb2.ReloadConfigRequest()
            c = req.config.model_config_list.config.add()
            c.name, c.base_path, c.model_platform = "soak", base, "tensorflow"
            c.model_version_policy.latest.num_versions = 2
            newest = max(v for v in version_src if os.path.isdir(os.path.join(base, str(v))))
            try:
                resp = reload_stub.HandleReloadConfigRequest(req, timeout=60)
                if resp.status.error_code != 0:
                    problems.append(f"reload refused: {resp.status.error_message}")
            except grpc.RpcError as e:
                problems.append(f"reload failed: {e.code()} {e.details()}")
            stats["reloads"] += 1
            del newest
            next_reload += args.reload
        time.sleep(0.2)
    stop.set()
    for t in clients:
        t.join()
    samples.append((round(time.time() - start, 1), "end", rss_kib(pid), fd_count(pid)))
    alive = server.proc.poll() is None
    code = server.stop()

    before_swaps = [s for s in samples if s[1] == "before swap"]
    growth = fd_growth = None
    if len(before_swaps) >= 3:
        first, last = before_swaps[1], before_swaps[-1]  # after the first swap .. before the last
        growth = last[2] / first[2] - 1
        fd_growth = last[3] - first[3]
    summary = {
        "minutes": args.minutes, "swap_seconds": args.swap, "reload_seconds": args.reload, "rate": args.rate,
        **stats, "server_alive_at_end": alive, "exit_status": code,
        "rss_mib_after_first_swap": before_swaps[1][2] / 1024 if len(before_swaps) > 1 else None,
        "rss_mib_before_last_swap": before_swaps[-1][2] / 1024 if before_swaps else None,
        "rss_growth": growth, "fd_growth": fd_growth,
        "rss_mib_max": max(s[2] for s in samples) / 1024, "problems": problems,
        "before_swap_samples": before_swaps,
    }
    passed = (alive and stats["good_failed"] == 0 and stats["bad_wrong"] == 0 and growth is not None and
              growth <= 0.05 and fd_growth is not None and fd_growth <= 0 and not
              [p for p in problems if "reload" in p or "exited" in p])
    summary["passed"] = bool(passed)
    print(json.dumps({k: v for k, v in summary.items() if k != "before_swap_samples"}, indent=1))
    print("before each swap (s, rss MiB, fds):",
          ", ".join(f"{s[0]:.0f}: {s[2] / 1024:.1f}/{s[3]}" for s in before_swaps))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


try:
    rc = main()
finally:
    for s in STARTED:
        if s.proc.poll() is None:
            s.stop()
sys.exit(rc)
