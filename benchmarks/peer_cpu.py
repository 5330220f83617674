#!/usr/bin/env python3
"""Training throughput on the CPU: Tandem vs TensorFlow-CPU (Keras model.fit) and PyTorch-CPU
(where it is installed), same models, same batch sizes, same data, same machine, one run.

Each framework trains `--epochs` epochs on the first `--samples` Fashion-MNIST training images;
the reported figure is samples/s over the epochs after the first (warm-up excluded).

  pip install -r benchmarks/requirements-peers.txt                 # PyTorch (large: CUDA wheels)
  python3 benchmarks/peer_cpu.py --tandem build/tandem            # the table in RESULTS.md

Several Tandem binaries (old=/tmp/tandem-main new=build/tandem) and --rounds N run every
binary and peer once per round, interleaved, and report the median (min..max) of the rounds and
the ratios of the medians: the way to compare two builds on a noisy machine.
"""
import argparse
import gzip
import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
import numpy as np

DATA = os.environ.get("TANDEM_DATA", "/usr/share/datasets/fashion-mnist")
CASES = [("mlp", 32), ("mlp", 256), ("cnn", 100)]


def load(split):
    def read(name):
        with gzip.open(os.path.join(DATA, name + ".gz")) as f:
            return f.read()
    img = read(f"{split}-images-idx3-ubyte")
    lab = read(f"{split}-labels-idx1-ubyte")
    n = struct.unpack(">I", img[4:8])[0]
    x = np.frombuffer(img, np.uint8, offset=16).reshape(n, 28, 28, 1)
    y = np.frombuffer(lab, np.uint8, offset=8)
    return x, y


def tandem_run(binary, model, batch, samples, epochs, threads):
    out = tempfile.mkdtemp(prefix="tandem-bench-")
    cmd = [binary, "train", "--model", model, "--batch-size", str(batch), "--epochs", str(epochs),
           "--train-samples", str(samples), "--output", out, "--threads", str(threads), "--optimizer", "sgd",
           "--validation-size", "0"]  # epoch_seconds excludes validation; skipping it only saves time
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    hist = json.load(open(os.path.join(out, "history.json")))
    secs = hist["epoch_seconds"][1:] or hist["epoch_seconds"]
    return samples * len(secs) / sum(secs)


def keras_model(name):
    import keras
    L = keras.layers
    if name == "mlp":
        layers = [L.Flatten(), L.Dense(300, activation="relu"), L.Dense(100, activation="relu"),
                  L.Dense(10, activation="softmax")]
    else:
        layers = [L.Conv2D(64, 7, padding="same", activation="relu"), L.MaxPooling2D(2),
                  L.Conv2D(128, 3, padding="same", activation="relu"),
                  L.Conv2D(128, 3, padding="same", activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                  L.Dense(64, activation="relu"), L.Dropout(0.5), L.Dense(10, activation="softmax")]
    m = keras.Sequential([keras.Input((28, 28, 1))] + layers)
    m.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def tf_run(model, batch, x, y, epochs):
    import keras
    m = keras_model(model)
    times = []

    class T(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, e, logs=None):
            times.append(time.perf_counter() - self.t)
    m.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[T()], shuffle=True)
    secs = times[1:] or times
    return len(x) * len(secs) / sum(secs)


def torch_run(model, batch, x, y, epochs, threads):
    import torch
    import torch.nn as nn
    torch.set_num_threads(threads)
    if model == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                            nn.Linear(100, 10))
    else:
        net = nn.Sequential(nn.Conv2d(1, 64, 7, padding=3), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1),
                            nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6272, 64), nn.ReLU(),
                            nn.Dropout(0.5), nn.Linear(64, 10))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float() / 255.0
    yt = torch.from_numpy(y.astype(np.int64))
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t)
    secs = times[1:] or times
    return len(xt) * len(secs) / sum(secs)


def worker(a):
    """One framework, one case, in a process of its own: TensorFlow and PyTorch each bundle LLVM,
    and importing both into one process aborts ("registered more than once")."""
    x_all, y_all = load("train")
    x, y = x_all[:a.samples], y_all[:a.samples]  # the images Tandem trains on (--validation-size 0)
    if a.worker == "tensorflow":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        sps = tf_run(a.model, a.batch, x.astype(np.float32) / 255.0, y, a.epochs)
        version = tf.__version__
    else:
        import torch
        sps = torch_run(a.model, a.batch, x, y, a.epochs, a.threads)
        version = torch.__version__
    print(json.dumps({"samples_per_second": sps, "version": version}))


def peer(framework, model, batch, n, a):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--model", model, "--batch", str(batch),
           "--samples", str(n), "--epochs", str(a.epochs), "--threads", str(a.threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"{framework} failed on {model}/{batch}:\n{r.stderr[-2000:]}", file=sys.stderr)
        return None, None
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["samples_per_second"], out["version"]


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tandem", nargs="+", default=["build/tandem"], help="binaries, as PATH or LABEL=PATH")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=0, help="training images (default: 20000 mlp, 4000 cnn)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--cases", default="", help="e.g. mlp:32,cnn:100")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; figures are their medians")
    ap.add_argument("--peers", default="tensorflow,pytorch", help="peers to run where installed ('' for none)")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--worker", choices=["tensorflow", "pytorch"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in a.cases.split(",")] if a.cases else CASES
    binaries = []
    for t in a.tandem:
        label, _, path = t.rpartition("=")
        binaries.append((label or ("tandem" if len(a.tandem) == 1 else path), path))
    modules = {"tensorflow": "tensorflow", "pytorch": "torch"}
    peers = [f for f in a.peers.split(",") if f in modules and importlib.util.find_spec(modules[f]) is not None]
    runners = [label for label, _ in binaries] + peers
    versions = {f: None for f in modules}
    samples = {}  # (model, batch, runner) -> [samples/s per round]
    for rnd in range(a.rounds):
        for model, batch in cases:
            n = a.samples or (20000 if model == "mlp" else 4000)
            for label, path in binaries:
                samples.setdefault((model, batch, label), []).append(
                    tandem_run(path, model, batch, n, a.epochs, a.threads))
            for framework in peers:
                sps, version = peer(framework, model, batch, n, a)
                if sps is not None:
                    samples.setdefault((model, batch, framework), []).append(sps)
                    versions[framework] = version
            got = {r: round(samples[(model, batch, r)][-1]) for r in runners if (model, batch, r) in samples}
            print(json.dumps({"round": rnd + 1, "model": model, "batch": batch, "samples_per_second": got}), flush=True)
    rows = []
    for model, batch in cases:
        row = {"model": model, "batch": batch, "samples": a.samples or (20000 if model == "mlp" else 4000),
               "rounds": {}, "median": {}}
        for r in runners:
            if (model, batch, r) in samples:
                row["rounds"][r] = samples[(model, batch, r)]
                row["median"][r] = median(samples[(model, batch, r)])
        first = binaries[0][0]
        for label, _ in binaries:  # each binary against each peer, and against the first binary
            for other in peers + ([first] if label != first else []):
                if label in row["median"] and other in row["median"]:
                    row[f"{label} / {other}"] = row["median"][label] / row["median"][other]
        rows.append(row)
    print(f"\nCPU: {os.cpu_count()} cores, {a.threads} threads; {a.rounds} round(s), median (min..max) samples/s; "
          f"TensorFlow {versions['tensorflow']}; PyTorch {versions['pytorch']}")
    ratio_keys = list(dict.fromkeys(k for r in rows for k in r if " / " in k))
    print("| model | batch | " + " | ".join(runners) + " | " + " | ".join(ratio_keys) + " |")
    print("|---" * (2 + len(runners) + len(ratio_keys)) + "|")
    for r in rows:
        cells = []
        for name in runners:
            v = r["rounds"].get(name)
            cells.append(f"{median(v):,.0f} ({min(v):,.0f}..{max(v):,.0f})" if v else "-")
        ratios = [f"{r[k]:.2f}" if k in r else "-" for k in ratio_keys]
        print(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=2)


if __name__ == "__main__":
    main()
