#!/usr/bin/env python3
"""What --batch-invariant costs: training samples/s with and without it, same model, batch, data and
threads, one process (and optionally `mpirun -np 2`). The configurations take turns in a rotated
order and each keeps the median of its repeats (this VM's speed drifts by ~10% between runs).

  python3 benchmarks/invariance_cost.py --tandem build/tandem [--leaves 8] [--repeats 3] [--mpi]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile


def samples_per_second(cmd, samples):
    out = tempfile.mkdtemp(prefix="tandem-invariance-")
    try:
        subprocess.run(cmd + ["--output", out], check=True, stdout=subprocess.DEVNULL)
        secs = json.load(open(os.path.join(out, "history.json")))["epoch_seconds"]
        secs = secs[1:] or secs  # the first epoch warms up
        return samples * len(secs) / sum(secs)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", default="build/tandem")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--leaves", type=int, default=8)
    ap.add_argument("--samples", type=int, default=5120)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mpi", action="store_true", help="also compare under mpirun -np 2 (1 thread per rank)")
    a = ap.parse_args()
    mpi = ["mpirun", "--oversubscribe", "--allow-run-as-root", "--bind-to", "core", "-np", "2"]
    print(f"--batch-invariant {a.leaves} vs default: train samples/s over epochs 2..{a.epochs} of {a.samples} "
          f"samples, batch {a.batch_size}, median of {a.repeats} interleaved runs")
    print(f"{'case':28s} {'default':>10s} {'invariant':>10s} {'ratio':>7s}")
    for model in a.models.split(","):
        common = ["train", "--model", model, "--epochs", str(a.epochs), "--train-samples", str(a.samples),
                  "--batch-size", str(a.batch_size), "--optimizer", "sgd", "--validation-size", "0"]
        cases = {f"{model}, 1 process": [a.tandem] + common}
        if a.mpi:
            cases[f"{model}, mpirun -np 2"] = mpi + [a.tandem] + common + ["--threads", "1", "--strategy",
                                                                            "multi-worker"]
        for label, cmd in cases.items():
            configs = {"default": cmd, "invariant": cmd + ["--batch-invariant", str(a.leaves)]}
            sps = {k: [] for k in configs}
            names = list(configs)
            for rep in range(a.repeats):
                for k in names[rep % 2:] + names[:rep % 2]:
                    sps[k].append(samples_per_second(configs[k], a.samples))
            d, i = statistics.median(sps["default"]), statistics.median(sps["invariant"])
            print(f"{label:28s} {d:10.0f} {i:10.0f} {i / d:7.2f}", flush=True)


if __name__ == "__main__":
    main()
