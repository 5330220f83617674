#!/usr/bin/env python3
"""Checkpointing overhead: `cnn` training with a checkpoint committed at every epoch end vs none,
same run otherwise (seed, threads, data), as a fraction of training time. Two measures:

  * direct: the seconds the training thread spends on checkpoints (snapshot, barrier, hand-off to
    the writer thread; `checkpoint_blocking_seconds` in metrics.json) over the training time of
    the same run — what checkpointing takes from training, free of run-to-run noise;
  * bound: the blocked time plus all of the writer thread's time, as if every second of it were
    taken from training (on a machine whose cores training keeps busy);
  * wall: the wall time of `tandem train` with and without checkpoints, runs interleaved, median
    of --repeats each — includes the writer thread's competition for the cores, and the noise.

  python3 benchmarks/checkpoint_overhead.py --tandem build/tandem [--repeats 5]
"""
import argparse
import json
import os
import shutil
import statistics
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
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(out, "checkpoints"))
               for f in fs)
    shutil.rmtree(out, ignore_errors=True)
    return wall, metrics, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", default="build/tandem")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    base, ckpt, direct, bound = [], [], [], []
    size, writes, write_s = 0, 0, []
    for i in range(a.repeats):  # interleaved, alternating which goes first, so drift affects both alike
        order = [False, True] if i % 2 == 0 else [True, False]
        for with_ckpt in order:
            if with_ckpt:
                wall, m, size = train(a.tandem, ["--checkpoint-every", "epoch"], a)
                ckpt.append(wall)
                direct.append(m["checkpoint_blocking_seconds"] / m["train_seconds"])
                bound.append((m["checkpoint_blocking_seconds"] + m["checkpoint_write_seconds"]) / m["train_seconds"])
                writes = m["checkpoints_written"]
                write_s.append(m["checkpoint_write_seconds"])
            else:
                base.append(train(a.tandem, [], a)[0])
    b, c = statistics.median(base), statistics.median(ckpt)
    print(f"{a.model}: {a.epochs} epochs of {a.samples} samples, {a.repeats} interleaved runs each")
    print(f"  direct: training thread blocked by checkpoints {statistics.median(direct) * 100:.3f}% of training "
          f"time (median; max {max(direct) * 100:.3f}%); background writes {statistics.median(write_s):.3f} s "
          f"for {writes} checkpoints ({size / 1e6:.1f} MB kept on disk)")
    print(f"  bound : even if the writer thread's whole time were taken from training, "
          f"{statistics.median(bound) * 100:.3f}% (median; max {max(bound) * 100:.3f}%)")
    print(f"  wall  : no checkpoints {b:7.2f} s, checkpoint every epoch {c:7.2f} s, overhead {(c - b) / b * 100:+.2f}% "
          f"(medians; runs {', '.join(f'{x:.1f}' for x in base)} vs {', '.join(f'{x:.1f}' for x in ckpt)})")


if __name__ == "__main__":
    main()
