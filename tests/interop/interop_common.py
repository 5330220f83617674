"""Helpers shared by the interop checks (export_check.py, tflite_tfjs_check.py, tflite_quant_check.py): running tandem,
recording failures, the Fashion-MNIST files, and comparing probabilities with `tandem predict`'s."""
import gzip
import json
import os
import struct
import subprocess

import numpy as np

DATA = os.environ.get("TANDEM_DATA", "/usr/share/datasets/fashion-mnist")
TOL = 1e-5
TRAIN_IMAGES, SMALL_TEST_IMAGES = 2000, 500
failures = []


def fail(msg):
    print("FAIL:", msg)
    failures.append(msg)


def run(cmd, expect=0):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if expect is not None and p.returncode != expect:
        fail(f"{' '.join(cmd)} exited {p.returncode}, expected {expect}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p


def idx_file(name):
    for candidate in (os.path.join(DATA, name + ".gz"), os.path.join(DATA, name)):
        if os.path.exists(candidate):
            return candidate
    return None


def read_idx(name):
    path = idx_file(name)
    data = (gzip.open if path.endswith(".gz") else open)(path, "rb").read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return data[:4 + 4 * ndim], dims, data[4 + 4 * ndim:]


def write_subset(dst, name, count):
    header, dims, body = read_idx(name)
    per = int(np.prod(dims[1:])) if len(dims) > 1 else 1
    with gzip.open(os.path.join(dst, name + ".gz"), "wb") as f:
        f.write(header[:4] + struct.pack(">I", count) + header[8:] + body[:count * per])


def images(name, count=None):
    """The first `count` (default: all) images of an IDX file, as Tandem feeds its layers: x / 255 in
    float32, NHWC."""
    _, dims, body = read_idx(name)
    n = dims[0] if count is None else count
    pixels = np.frombuffer(body[:n * dims[1] * dims[2]], dtype=np.uint8).reshape(n, dims[1], dims[2], 1)
    return pixels.astype(np.float32) / np.float32(255)


def test_images():
    return images("t10k-images-idx3-ubyte")


def test_labels():
    return np.frombuffer(read_idx("t10k-labels-idx1-ubyte")[2], dtype=np.uint8)


def small_training_data(tmp, train_images=TRAIN_IMAGES):
    """The first `train_images` (default 2,000) training and 500 test images in a directory under tmp
    (made once per count): one quick epoch trains a model."""
    small = os.path.join(tmp, f"small-data-{train_images}")
    if not os.path.isdir(small):
        os.makedirs(small)
        write_subset(small, "train-images-idx3-ubyte", train_images)
        write_subset(small, "train-labels-idx1-ubyte", train_images)
        write_subset(small, "t10k-images-idx3-ubyte", SMALL_TEST_IMAGES)
        write_subset(small, "t10k-labels-idx1-ubyte", SMALL_TEST_IMAGES)
    return small


def skip_reason(missing):
    """Why an interop check cannot run here (`missing`: the runtimes not installed), or None."""
    if missing:
        return f"not installed: {', '.join(missing)}; tools/setup.sh installs them"
    if idx_file("t10k-images-idx3-ubyte") is None or idx_file("train-images-idx3-ubyte") is None:
        return f"Fashion-MNIST not found in {DATA} (set TANDEM_DATA)"
    return None


def train_and_predict(tandem, model, small, out, count):
    """Trains `model` for one epoch on `small` into `out`; returns its version directory and `tandem
    predict`'s probabilities for the first `count` test images, or (None, None) after a failure."""
    if run([tandem, "train", "--model", model, "--epochs", "1", "--validation-size", "0", "--data", small,
            "--output", out]).returncode != 0:
        return None, None
    src = os.path.join(out, "model", "1")
    p = run([tandem, "predict", src, "--json", "--count", str(count), "--data", DATA])
    if p.returncode != 0:
        return None, None
    return src, np.array([r["probabilities"] for r in json.loads(p.stdout)], dtype=np.float32)


def compare(tag, ref, got):
    """max |diff| <= TOL per probability and the same argmax (but where Tandem's two best are a float tie).
    Returns (max |diff|, argmax mismatches, ties included)."""
    diff = float(np.max(np.abs(got - ref)))
    top2 = np.sort(ref, axis=1)[:, -2:]
    tie = (top2[:, 1] - top2[:, 0]) <= TOL
    mismatch = np.argmax(got, axis=1) != np.argmax(ref, axis=1)
    bad = int(np.sum(mismatch & ~tie))
    if diff > TOL:
        fail(f"{tag}: max |diff| {diff:.3e} > {TOL}")
    if bad:
        fail(f"{tag}: {bad} predicted classes differ from tandem predict")
    return diff, int(np.sum(mismatch))
