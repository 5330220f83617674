#!/usr/bin/env python3
"""Checkpointing overhead: `cnn` training time with a checkpoint committed at every epoch end vs
none, same run otherwise (seed, threads, data), reported as a fraction of training time.

  python3 benchmarks/checkpoint_overhead.py --tandem build/tandem
"""
import argparse
import json
import os
import subprocess
import tempfile
import time


def train(tandem, extra, args):
    out = tempfile.mkdtemp(prefix="tandem-ckpt-bench-")
    cmd = [tandem, "train", "--model", args.model, "--epochs", str(args.epochs), "--train-samples",
           str(args.samples), "--validation-size", "1000", "--output", out] + extra
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    hist = json.load(open(os.path.join(out, "history.json")))
    return sum(hist["epoch_seconds"]), wall, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", default="build/tandem")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    base, ckpt = [], []
    for _ in range(a.repeats):  # interleaved, so drift affects both alike
        base.append(train(a.tandem, [], a)[1])
        ckpt.append(train(a.tandem, ["--checkpoint-every", "epoch"], a)[1])
    b, c = min(base), min(ckpt)
    _, _, out = train(a.tandem, ["--checkpoint-every", "epoch"], a)
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(out, "checkpoints"))
               for f in fs)
    print(f"{a.model}: {a.epochs} epochs of {a.samples} samples, best of {a.repeats} runs (wall time of tandem train)")
    print(f"  no checkpoints        : {b:7.2f} s")
    print(f"  checkpoint every epoch: {c:7.2f} s   overhead {(c - b) / b * 100:+.2f}%  "
          f"({a.epochs} checkpoints, {size / 1e6:.1f} MB kept on disk)")


if __name__ == "__main__":
    main()
