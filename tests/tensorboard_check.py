#!/usr/bin/env python3
"""--tensorboard DIR: TensorBoard's own reader (event_accumulator, from PyPI's tensorboard) reads our
event files back: the same scalars as history.json, steps and wall times increasing, every record's
framing and masked CRC32C as TFRecord has them, the first Event the file version; a truncated last
record (a killed writer) is skipped as TensorBoard skips it; a resumed run adds a file that TensorBoard
merges; bad flags are refused (exit 2) before training."""
import glob
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testdata import make_dataset  # noqa: E402

try:
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.compat.proto import event_pb2
except ImportError as e:  # tools/requirements.txt installs it
    print(f"SKIP: tensorboard is not installed ({e}); pip install tensorboard")
    sys.exit(77)

TANDEM = sys.argv[1]
failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f"  ({detail})" if detail and not ok else ""), flush=True)
    if not ok:
        failures.append(name + ": " + detail)


def train(args, expect=0):
    r = subprocess.run([TANDEM, "train"] + args, capture_output=True, text=True, timeout=300)
    if (r.returncode == 0) != (expect == 0):
        failures.append(f"tandem train {' '.join(args)}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
    return r


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def records(path):
    """The Events of a TFRecord file, checking each record's length and data CRCs."""
    blob = open(path, "rb").read()
    out, pos, ok = [], 0, True
    while pos < len(blob):
        header = blob[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        data = blob[pos + 12:pos + 12 + length]
        (data_crc,) = struct.unpack("<I", blob[pos + 12 + length:pos + 16 + length])
        ok = ok and length_crc == masked(header) and data_crc == masked(data)
        e = event_pb2.Event()
        e.ParseFromString(data)
        out.append(e)
        pos += 16 + length
    return out, ok


def f32(values):
    return [struct.unpack("<f", struct.pack("<f", v))[0] for v in values]


def scalars(run_dir):
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


tmp = tempfile.mkdtemp(prefix="tandem-tensorboard-")
try:
    data = make_dataset(os.path.join(tmp, "data"), 160, 32)
    # 128 training samples in batches of 32: 4 steps an epoch; batch summaries every 2 steps.
    base = ["--data", data, "--validation-size", "32", "--threads", "1", "--batch-size", "32", "--optimizer", "sgd",
            "--lr", "0.05"]
    out, logs = os.path.join(tmp, "run"), os.path.join(tmp, "logs")
    train(base + ["--epochs", "3", "--output", out, "--tensorboard", logs, "--tensorboard-update-freq", "2"])
    history = json.load(open(os.path.join(out, "history.json")))
    files = {split: sorted(glob.glob(os.path.join(logs, split, "events.out.tfevents.*.v2")))
             for split in ("train", "validation")}
    check("one event file in DIR/train and one in DIR/validation", all(len(f) == 1 for f in files.values()),
          str(files))

    for split, paths in files.items():
        events, crc_ok = records(paths[0]) if paths else ([], False)
        check(f"{split}: every record's length and data carry TFRecord's masked CRC32C", crc_ok)
        check(f"{split}: the first Event is file_version brain.Event:2",
              bool(events) and events[0].file_version == "brain.Event:2")
        walls = [e.wall_time for e in events]
        check(f"{split}: wall times never decrease", walls == sorted(walls) and walls[0] > 1.6e9, str(walls))

    train_s, val_s = scalars(os.path.join(logs, "train")), scalars(os.path.join(logs, "validation"))
    for tag, key in (("epoch_loss", "loss"), ("epoch_accuracy", "accuracy"), ("epoch_learning_rate", "learning_rate")):
        got = train_s.get(tag, [])
        check(f"train/{tag} at steps 0, 1, 2", [s.step for s in got] == [0, 1, 2], str([s.step for s in got]))
        check(f"train/{tag} equals history.json's {key}", [s.value for s in got] == f32(history[key]),
              f"{[s.value for s in got]} vs {history[key]}")
    for tag, key in (("epoch_loss", "val_loss"), ("epoch_accuracy", "val_accuracy")):
        got = val_s.get(tag, [])
        check(f"validation/{tag} equals history.json's {key}",
              [s.step for s in got] == [0, 1, 2] and [s.value for s in got] == f32(history[key]),
              f"{[(s.step, s.value) for s in got]} vs {history[key]}")
    sps = [s.value for s in train_s.get("epoch_samples_per_second", [])]
    check("train/epoch_samples_per_second: 128 samples over each epoch's seconds",
          len(sps) == 3 and all(abs(v - 128 / t) <= 1e-3 * v for v, t in zip(sps, history["epoch_seconds"])),
          f"{sps} vs {history['epoch_seconds']}")
    batch = train_s.get("batch_loss", [])
    check("train/batch_loss every 2 global steps", [s.step for s in batch] == [2, 4, 6, 8, 10, 12],
          str([s.step for s in batch]))
    # The running mean at an epoch's last step is the epoch's loss.
    check("train/batch_loss at each epoch's last step equals the epoch's loss",
          [s.value for s in batch if s.step % 4 == 0] == f32(history["loss"]), str(batch))
    check("train/batch_accuracy beside batch_loss", len(train_s.get("batch_accuracy", [])) == len(batch))

    # A killed writer leaves a truncated last record: TensorBoard reads the rest.
    cut = os.path.join(tmp, "cut", "train")
    os.makedirs(cut)
    blob = open(files["train"][0], "rb").read()
    open(os.path.join(cut, os.path.basename(files["train"][0])), "wb").write(blob[:-7])
    cut_s = scalars(cut)
    check("truncated last record skipped, the others read",
          [s.step for s in cut_s.get("epoch_loss", [])] == [0, 1] and len(cut_s.get("batch_loss", [])) == 6,
          str({k: [s.step for s in v] for k, v in cut_s.items()}))

    # A resumed run writes a new file beside the first; TensorBoard merges them into one curve.
    out2, logs2 = os.path.join(tmp, "run2"), os.path.join(tmp, "logs2")
    train(base + ["--epochs", "2", "--checkpoint-every", "epoch", "--output", out2, "--tensorboard", logs2])
    train(base + ["--epochs", "3", "--checkpoint-every", "epoch", "--resume", out2, "--tensorboard", logs2])
    history2 = json.load(open(os.path.join(out2, "history.json")))
    merged = scalars(os.path.join(logs2, "train")).get("epoch_loss", [])
    check("resumed: two files in DIR/train", len(glob.glob(os.path.join(logs2, "train", "events.out.*"))) == 2)
    check("resumed: TensorBoard reads epochs 0, 1, 2 equal to history.json",
          [s.step for s in merged] == [0, 1, 2] and [s.value for s in merged] == f32(history2["loss"]),
          f"{[(s.step, s.value) for s in merged]} vs {history2['loss']}")
    check("--tensorboard-update-freq epoch (the default) writes no batch summaries",
          "batch_loss" not in scalars(os.path.join(logs2, "train")))

    # Bad flags: one clear error, nothing trained.
    for args, words in ((["--tensorboard", logs, "--tensorboard-update-freq", "0"], "--tensorboard-update-freq"),
                        (["--tensorboard", logs, "--tensorboard-update-freq", "2x"], "--tensorboard-update-freq"),
                        (["--tensorboard-update-freq", "5"], "needs --tensorboard"),
                        (["--tensorboard", os.path.join(out, "history.json")], "--tensorboard")):
        r = train(base + ["--epochs", "1"] + args, expect=2)
        check(f"{' '.join(args[-2:])}: exit 2 naming {words}", r.returncode == 2 and words in r.stderr,
              f"exit {r.returncode}: {r.stderr.strip()[-300:]}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("TensorBoard reads the event files back as history.json has them")
