#!/usr/bin/env python3
"""--reduce-lr-on-plateau FACTOR,PATIENCE: the rate of each epoch in history.json equals Keras's rule
replayed on its val_loss (min_delta 1e-4, no cooldown), with at least one reduction; a run resumed
from a checkpoint recovers the reduced rate and ends bit-identical to the uninterrupted run."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testdata import make_dataset  # noqa: E402

TANDEM = sys.argv[1]
failures = []


def train(args):
    r = subprocess.run([TANDEM, "train"] + args, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        failures.append(f"train {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()[-300:]}")


def digest(version):
    r = subprocess.run([TANDEM, "inspect", version, "--json"], capture_output=True, text=True)
    return json.loads(r.stdout)["digest"] if r.returncode == 0 else r.stderr


tmp = tempfile.mkdtemp(prefix="tandem-plateau-")
try:
    data = make_dataset(os.path.join(tmp, "data"), 160, 32, learnable=False, seed=3)
    args = ["--data", data, "--validation-size", "32", "--threads", "1", "--batch-size", "32", "--optimizer", "sgd",
            "--lr", "0.05", "--lr-schedule", "none", "--reduce-lr-on-plateau", "0.5,2", "--checkpoint-every", "epoch"]
    straight, resumed = os.path.join(tmp, "straight"), os.path.join(tmp, "resumed")
    train(args + ["--epochs", "8", "--output", straight])
    train(args + ["--epochs", "3", "--output", resumed])
    train(args + ["--epochs", "8", "--resume", resumed])
    h = json.load(open(os.path.join(straight, "history.json")))
    best, wait, lr, expected = float("inf"), 0, 0.05, []
    for v in h["val_loss"]:
        expected.append(lr)
        if v < best - 1e-4:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= 2:
                wait, lr = 0, lr * 0.5
    if h["learning_rate"] != expected:
        failures.append(f"learning_rate {h['learning_rate']}, Keras's rule gives {expected}")
    if min(h["learning_rate"]) >= 0.05:
        failures.append("no reduction happened: the test data no longer plateaus")
    hr = json.load(open(os.path.join(resumed, "history.json")))
    if hr["learning_rate"] != h["learning_rate"] or hr["val_loss"] != h["val_loss"]:
        failures.append(f"resumed rates {hr['learning_rate']} differ from {h['learning_rate']}")
    if digest(os.path.join(resumed, "model", "2")) != digest(os.path.join(straight, "model", "1")):  # 1: its first 3 epochs
        failures.append("the resumed run's weights differ from the uninterrupted run's")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

print("\n".join(failures) if failures else "--reduce-lr-on-plateau follows Keras's rule, also across a resume")
sys.exit(1 if failures else 0)
