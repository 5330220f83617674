#!/usr/bin/env python3
"""--csv-log: Keras's CSVLogger layout, parsed back and compared with history.json, value for value;
a resumed run continues the file without repeating an epoch (also when a killed run had logged an
epoch its checkpoint does not hold); without a validation set there are no val_ columns."""
import csv
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
KERAS_COLUMNS = ["epoch", "accuracy", "learning_rate", "loss", "val_accuracy", "val_loss"]


def train(args):
    r = subprocess.run([TANDEM, "train"] + args, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        failures.append(f"tandem train {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return r


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  ({detail})" if detail and not ok else ""), flush=True)
    if not ok:
        failures.append(name + ": " + detail)


def compare_with_history(name, path, history_path, columns):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    history = json.load(open(history_path))
    check(f"{name}: header is {','.join(columns)}", rows and rows[0] == columns, str(rows[:1]))
    body = rows[1:]
    epochs = [int(r[0]) for r in body]
    check(f"{name}: one row per epoch, counted from 0, none repeated", epochs == list(range(len(history["loss"]))),
          f"epochs {epochs}, history has {len(history['loss'])}")
    for key in columns[1:]:
        got = [float(r[columns.index(key)]) for r in body]
        check(f"{name}: column {key} equals history.json's", got == history[key], f"{got} vs {history[key]}")
    return rows


tmp = tempfile.mkdtemp(prefix="tandem-csv-")
try:
    data = make_dataset(os.path.join(tmp, "data"), 160, 32)
    base = ["--data", data, "--validation-size", "32", "--threads", "1", "--batch-size", "32", "--optimizer", "sgd",
            "--lr", "0.05"]
    out = os.path.join(tmp, "run")
    log = os.path.join(tmp, "log.csv")
    train(base + ["--epochs", "2", "--checkpoint-every", "epoch", "--output", out, "--csv-log", log])
    first = compare_with_history("2 epochs", log, os.path.join(out, "history.json"), KERAS_COLUMNS)

    # A killed run can have logged an epoch that no committed checkpoint holds: that row is dropped.
    with open(log, "a") as f:
        f.write("2,0.5,0.01,1.5,0.5,1.5\n")
    train(base + ["--epochs", "4", "--checkpoint-every", "epoch", "--resume", out, "--csv-log", log])
    rows = compare_with_history("resumed to 4 epochs", log, os.path.join(out, "history.json"), KERAS_COLUMNS)
    check("resumed: the first run's rows are kept as they were", rows[:len(first)] == first)

    plain = os.path.join(tmp, "no-validation.csv")
    out2 = os.path.join(tmp, "run2")
    args = list(base)
    args[args.index("--validation-size") + 1] = "0"
    train(args + ["--epochs", "2", "--output", out2, "--csv-log", plain])
    compare_with_history("no validation set", plain, os.path.join(out2, "history.json"), KERAS_COLUMNS[:4])
finally:
    shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("the CSV log equals history.json")
