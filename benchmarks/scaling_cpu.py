#!/usr/bin/env python3
"""Data-parallel scaling on the CPU: `cnn` samples/s of `mpirun -np 2` (one thread per rank) vs
one rank with one thread, same per-replica batch (weak scaling, as DDP and Horovod report it),
and the step time with the bucketed all-reduce overlapping backward vs after it (--no-overlap).

  python3 benchmarks/scaling_cpu.py --tandem build/tandem
"""
import argparse
import json
import os
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
    a = ap.parse_args()
    mpi = ["mpirun", "--oversubscribe", "--allow-run-as-root", "--bind-to", "core", "-np", "2"]
    common = ["train", "--model", a.model, "--threads", "1", "--epochs", str(a.epochs),
              "--train-samples", str(a.samples), "--optimizer", "sgd"]
    one = run([a.tandem] + common + ["--batch-size", str(a.per_replica_batch)])
    two = run(mpi + [a.tandem] + common + ["--batch-size", str(2 * a.per_replica_batch),
                                           "--strategy", "multi-worker"])
    two_no = run(mpi + [a.tandem] + common + ["--batch-size", str(2 * a.per_replica_batch),
                                              "--strategy", "multi-worker", "--no-overlap"])
    sps = lambda secs: a.samples * len(secs) / sum(secs)
    steps = a.samples / (2 * a.per_replica_batch)
    s1, s2, s2n = sps(one), sps(two), sps(two_no)
    print(f"{a.model}, per-replica batch {a.per_replica_batch}, {a.samples} samples/epoch, "
          f"epochs after the first of {a.epochs}, 1 thread per rank")
    print(f"  1 rank : {s1:8.1f} samples/s")
    print(f"  2 ranks: {s2:8.1f} samples/s  efficiency {s2 / (2 * s1) * 100:.1f}%  (overlap on)")
    print(f"  2 ranks: {s2n:8.1f} samples/s  efficiency {s2n / (2 * s1) * 100:.1f}%  (--no-overlap)")
    print(f"  step time 2 ranks: overlap {sum(two) / len(two) / steps * 1e3:.1f} ms, "
          f"no overlap {sum(two_no) / len(two_no) / steps * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
