#!/usr/bin/env python3
"""CPU inference throughput: Tandem's forward pass (build/benchmarks/infer_bench) against ONNX Runtime
running our exported model.onnx and TensorFlow running our SavedModel, same thread count, each in a
process of its own, interleaved over ROUNDS rounds; medians with the min..max spread and the ratio
Tandem / peer. Models: the mlp and cnn presets (weights from one short epoch; cost does not depend on
them). Inputs are random pixels / 255, the same for every runtime.

Usage: infer_cpu.py [--threads 2] [--rounds 5] [--batches 1,16,256] [--seconds 2] [--peers ort,tf]"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PEER = r'''
import json, os, sys, time
import numpy as np
kind, path, batch, threads, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
x = (np.random.default_rng(0).integers(0, 256, (batch, 28, 28, 1)).astype(np.float32) / np.float32(255))
if kind == "ort":
    import onnxruntime as ort
    o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    run = lambda: s.run(None, {"input": x})
else:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    f = tf.saved_model.load(path).signatures["serving_default"]
    xt = tf.constant(x)
    run = lambda: f(input=xt)["probabilities"].numpy()
for _ in range(5): run()
n, t0 = 0, time.time()
while time.time() - t0 < seconds:
    run(); n += 1
print(json.dumps({"samples_per_s": n * batch / (time.time() - t0)}))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", default=os.path.join(ROOT, "build/tandem"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "build/benchmarks/infer_bench"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", default="1,16,256")
    ap.add_argument("--seconds", type=float, default=2)
    ap.add_argument("--peers", default="ort,tf", help="peers to run: ort, tf or both")
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    peers = [p for p in a.peers.split(",") if p]
    if not peers or any(p not in ("ort", "tf") for p in peers):
        ap.error("--peers takes ort, tf or ort,tf")
    work = tempfile.mkdtemp(prefix="tandem-infer-")
    try:
        for m in ("mlp", "cnn"):
            subprocess.run([a.tandem, "train", "--model", m, "--epochs", "1", "--train-samples", "2000", "--output",
                            os.path.join(work, m)], check=True, capture_output=True)
            subprocess.run([a.tandem, "export", os.path.join(work, m, "model/1"), "--to", os.path.join(work, "serve", m),
                            "--format", "savedmodel,onnx"], check=True, capture_output=True)
        res = {}
        for r in range(a.rounds):
            for m in ("mlp", "cnn"):
                vdir = os.path.join(work, "serve", m, "1")
                for b in batches:
                    # About `seconds` of work per run for Tandem too.
                    probe = json.loads(subprocess.run([a.bench, vdir, str(b), "20", str(a.threads)], check=True,
                                                      capture_output=True, text=True).stdout)
                    iters = max(20, int(a.seconds * probe["samples_per_s"] / b))
                    out = subprocess.run([a.bench, vdir, str(b), str(iters), str(a.threads)], check=True,
                                         capture_output=True, text=True).stdout
                    res.setdefault((m, b, "tandem"), []).append(json.loads(out)["samples_per_s"])
                    for peer in peers:
                        path = os.path.join(vdir, "model.onnx") if peer == "ort" else vdir
                        out = subprocess.run([sys.executable, "-c", PEER, peer, path, str(b), str(a.threads),
                                              str(a.seconds)], check=True, capture_output=True, text=True).stdout
                        res.setdefault((m, b, peer), []).append(json.loads(out.strip().splitlines()[-1])["samples_per_s"])
        print(f"\nsamples/s, {a.threads} threads, median of {a.rounds} (min..max); ratio = Tandem / peer\n")
        names = {"ort": ("ONNX Runtime", "vs ORT"), "tf": ("TensorFlow", "vs TF")}
        print("| model | batch | Tandem | " + " | ".join(names[p][0] for p in peers) + " | " +
              " | ".join(names[p][1] for p in peers) + " |")
        print("|---|---|---|" + "---|" * (2 * len(peers)))
        med = statistics.median
        fmt = lambda v: f"{med(v):,.0f} ({min(v):,.0f}..{max(v):,.0f})"
        for m in ("mlp", "cnn"):
            for b in batches:
                t = res[(m, b, "tandem")]
                cols = [fmt(t)] + [fmt(res[(m, b, p)]) for p in peers]
                cols += [f"{med(t) / med(res[(m, b, p)]):.2f}" for p in peers]
                print(f"| {m} | {b} | " + " | ".join(cols) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
