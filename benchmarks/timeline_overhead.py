#!/usr/bin/env python3
"""--timeline's cost: `tandem train` with and without it, interleaved, on the same machine; prints
each run's samples/s (metrics.json) and the ratio of the medians with the spread.

  python3 benchmarks/timeline_overhead.py build/tandem [--runs 7] [--model mlp] [--epochs 1] [-- EXTRA FLAGS]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

p = argparse.ArgumentParser()
p.add_argument("tandem")
p.add_argument("--runs", type=int, default=7)
p.add_argument("--model", default="mlp")
p.add_argument("--epochs", type=int, default=1)
p.add_argument("--train-samples", type=int, default=55000)
p.add_argument("extra", nargs="*")
a = p.parse_args()

tmp = tempfile.mkdtemp(prefix="tandem-timeline-bench-")
rates = {"off": [], "on": []}
pairs = []  # on/off of the two runs of each round, adjacent in time
for i in range(a.runs):
    for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
        out = os.path.join(tmp, f"{mode}-{i}")
        cmd = [a.tandem, "train", "--model", a.model, "--epochs", str(a.epochs), "--train-samples",
               str(a.train_samples), "--output", out] + a.extra
        if mode == "on":
            cmd += ["--timeline", os.path.join(tmp, f"t-{i}.json")]
        subprocess.run(cmd, check=True, capture_output=True)
        rates[mode].append(json.load(open(os.path.join(out, "metrics.json")))["samples_per_second"])
        print(f"run {i} {mode:3s} {rates[mode][-1]:10.0f} samples/s", flush=True)
    pairs.append(rates["on"][-1] / rates["off"][-1])
m_off, m_on = statistics.median(rates["off"]), statistics.median(rates["on"])
print(f"median off {m_off:.0f} (range {min(rates['off']):.0f}-{max(rates['off']):.0f}), "
      f"on {m_on:.0f} (range {min(rates['on']):.0f}-{max(rates['on']):.0f}) samples/s; "
      f"on/off = {m_on / m_off:.4f}; model {a.model}, {a.runs} interleaved runs each")
print(f"per-round on/off: median {statistics.median(pairs):.4f}, range {min(pairs):.4f}-{max(pairs):.4f}")
