#!/usr/bin/env python3
"""Data-parallel scaling on the CPU: `cnn` samples/s of `mpirun -np 2` (one thread per rank) vs
one rank with one thread, same per-replica batch (weak scaling, as DDP and Horovod report it),
and the step time with the bucketed all-reduce overlapping backward vs after it (--no-overlap).

  python3 benchmarks/scaling_cpu.py --tandem build/tandem
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile


def run(cmd):
    out = tempfile.mkdtemp(prefix="tandem-scaling-")
    subprocess.run(cmd + ["--output", out], check=True, stdout=subprocess.DEVNULL)
    hist = json.load(open(os.path.join(out, "history.json")))
    secs = hist["epoch_seconds"][1:] or hist["epoch_seconds"]
    return secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", default="build/tandem")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--per-replica-batch", type=int, default=64)
    ap.add_argument("--samples", type=int, default=2560)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    mpi = ["mpirun", "--oversubscribe", "--allow-run-as-root", "--bind-to", "core", "-np", "2"]
    common = ["train", "--model", a.model, "--threads", "1", "--epochs", str(a.epochs),
              "--train-samples", str(a.samples), "--optimizer", "sgd"]
    configs = {
        "1 rank": [a.tandem] + common + ["--batch-size", str(a.per_replica_batch)],
        "2 ranks": mpi + [a.tandem] + common + ["--batch-size", str(2 * a.per_replica_batch),
                                                "--strategy", "multi-worker"],
        "2 ranks --no-overlap": mpi + [a.tandem] + common + ["--batch-size", str(2 * a.per_replica_batch),
                                                             "--strategy", "multi-worker", "--no-overlap"],
    }
    # This VM's speed drifts by ~10% between runs: the configurations take turns, in a rotated
    # order, and each keeps the median of its repeats.
    sps = {k: [] for k in configs}
    names = list(configs)
    for rep in range(a.repeats):
        for k in names[rep % len(names):] + names[:rep % len(names)]:
            secs = run(configs[k])
            sps[k].append(a.samples * len(secs) / sum(secs))
    med = {k: statistics.median(v) for k, v in sps.items()}
    print(f"{a.model}, per-replica batch {a.per_replica_batch}, {a.samples} samples/epoch, "
          f"epochs after the first of {a.epochs}, 1 thread per rank, median of {a.repeats} interleaved runs")
    s1 = med["1 rank"]
    print(f"  1 rank : {s1:8.1f} samples/s   runs {', '.join(f'{x:.1f}' for x in sps['1 rank'])}")
    for k, label in (("2 ranks", "overlap on"), ("2 ranks --no-overlap", "--no-overlap")):
        runs = ", ".join(f"{x:.1f}" for x in sps[k])
        print(f"  2 ranks: {med[k]:8.1f} samples/s  efficiency {med[k] / (2 * s1) * 100:.1f}%  ({label})  runs {runs}")
    print(f"  step time 2 ranks: overlap {2 * a.per_replica_batch / med['2 ranks'] * 1e3:.1f} ms, "
          f"no overlap {2 * a.per_replica_batch / med['2 ranks --no-overlap'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
