#!/usr/bin/env python3
"""Gloo against MPI for the same multi-worker job on two network-namespace hosts (issue 20): the
same `tandem train --strategy multi-worker` launched by mpirun (MPI collectives) and by hand with
TF_CONFIG per worker (Gloo collectives), in the same run, taking turns round by round; then the bus
bandwidth of Tandem's bucketed all-reduce and of one raw all-reduce of the whole buffer, over each
(allreduce_bench under mpirun, and under TF_CONFIG). Needs root (namespaces).

  python3 benchmarks/gloo_vs_mpi.py --tandem build/tandem --rounds 3

Every rank runs one compute thread (--threads 1); the hosts share this machine's cores. Each
figure is the median over rounds with its min-max; the ratio is Gloo's median over MPI's.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
from cluster import Cluster, Refused, run  # noqa: E402

DATA = os.environ.get("TANDEM_DATA", "/usr/share/datasets/fashion-mnist")


def hosts_of(layout):
    hosts, per_host = layout
    return [f"h{h + 1}" for h in range(hosts) for _ in range(per_host)]


def launch(cluster, launcher, layout, cmd, timeout=900):
    """Runs cmd on every rank of `layout` (hosts, ranks per host) through mpirun or by hand with
    TF_CONFIG; returns rank 0's stdout."""
    hosts = hosts_of(layout)
    if launcher == "mpi":
        r = run(cluster.mpirun(len(hosts), ",".join(f"h{h + 1}:{layout[1]}" for h in range(layout[0])), cmd),
                timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"mpirun {' '.join(cmd[:3])} failed ({r.returncode}): {r.stderr[-600:]}")
        return r.stdout
    ports = {}
    addresses = []
    for h in hosts:
        ports[h] = ports.get(h, 2221) + 1
        addresses.append(f"{h}:{ports[h]}")
    procs = []
    for i, h in enumerate(hosts):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": addresses},
                                                     "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([cluster.inhost, h] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    outs = [p.communicate(timeout=timeout) for p in procs]
    if any(p.returncode != 0 for p in procs):
        raise RuntimeError(f"TF_CONFIG {' '.join(cmd[:3])} failed: {[p.returncode for p in procs]} "
                           f"{outs[0][1][-600:]}")
    return outs[0][0]


def train(cluster, tandem, launcher, layout, model, samples, per_replica, epochs, tmp):
    ranks = layout[0] * layout[1]
    out = tempfile.mkdtemp(prefix="gvm-", dir=tmp)
    args = [tandem, "train", "--data", DATA, "--model", model, "--threads", "1", "--epochs", str(epochs),
            "--train-samples", str(samples), "--validation-size", "0", "--optimizer", "sgd",
            "--batch-size", str(per_replica * ranks), "--output", out, "--strategy", "multi-worker"]
    stdout = launch(cluster, launcher, layout, args)
    want = "gloo gradients" if launcher == "gloo" else "mpi gradients"
    if want not in stdout:
        raise RuntimeError(f"{launcher}: the job did not say '{want}': {stdout[:300]}")
    secs = json.load(open(os.path.join(out, "history.json")))["epoch_seconds"][1:]
    run(["rm", "-rf", out])
    return samples * len(secs) / sum(secs)


def busbw(cluster, bench, launcher, sizes, iters):
    stdout = launch(cluster, launcher, (2, 1), [bench, "--iters", str(iters), "--rounds", "3",
                                                "--sizes", ",".join(map(str, sizes))])
    rows = {}
    for line in stdout.splitlines():
        f = line.split()
        if len(f) == 6 and f[0].isdigit():
            rows[int(f[0])] = {"bucketed": float(f[2]), "raw": float(f[4])}
    return rows


def size_label(b):
    return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB"


def summary(values):
    return statistics.median(values), min(values), max(values)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tandem", default="build/tandem")
    ap.add_argument("--allreduce-bench", default="build/benchmarks/allreduce_bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="the first is warm-up")
    ap.add_argument("--per-replica-batch", type=int, default=64)
    ap.add_argument("--mlp-samples", type=int, default=12800)
    ap.add_argument("--cnn-samples", type=int, default=1280)
    ap.add_argument("--sizes", default="1048576,4194304,16777216,67108864")
    ap.add_argument("--models", default="mlp,cnn", help="which training jobs to run")
    ap.add_argument("--json", default="", help="also write the measurements here")
    a = ap.parse_args()
    tandem, bench = os.path.abspath(a.tandem), os.path.abspath(a.allreduce_bench)
    sizes = [int(s) for s in a.sizes.split(",")]
    tmp = tempfile.mkdtemp(prefix="tandem-gvm-")
    try:
        cluster = Cluster(tmp, 2)
    except Refused as e:
        print("SKIP: " + str(e))
        return 77
    jobs = [("mlp", (2, 1), a.mlp_samples), ("mlp", (2, 2), a.mlp_samples), ("cnn", (2, 2), a.cnn_samples)]
    jobs = [j for j in jobs if j[0] in a.models.split(",")]
    sps = {(m, l, lau): [] for m, l, _ in jobs for lau in ("mpi", "gloo")}
    bw = {(s, kind, lau): [] for s in sizes for kind in ("bucketed", "raw") for lau in ("mpi", "gloo")}
    try:
        for rnd in range(a.rounds):
            order = ("mpi", "gloo") if rnd % 2 == 0 else ("gloo", "mpi")
            for model, layout, samples in jobs:
                for lau in order:
                    v = train(cluster, tandem, lau, layout, model, samples, a.per_replica_batch, a.epochs, tmp)
                    sps[(model, layout, lau)].append(v)
                    print(f"round {rnd + 1}: {model} {layout[0]}x{layout[1]} {lau}: {v:.0f} samples/s", flush=True)
            for lau in order:
                rows = busbw(cluster, bench, lau, sizes, 10)
                for s, r in rows.items():
                    for kind in ("bucketed", "raw"):
                        bw[(s, kind, lau)].append(r[kind])
                print(f"round {rnd + 1}: all-reduce {lau}: " +
                      ", ".join(f"{size_label(s)} {r['bucketed']:.2f}/{r['raw']:.2f} GB/s" for s, r in rows.items()),
                      flush=True)
    finally:
        cluster.down()
        run(["rm", "-rf", tmp])

    print(f"\n{a.rounds} rounds, interleaved; median (min-max); ratio = Gloo / MPI of the medians\n")
    print("| job | MPI samples/s | Gloo samples/s | Gloo / MPI |")
    print("|---|---|---|---|")
    for model, layout, _ in jobs:
        m, g = summary(sps[(model, layout, "mpi")]), summary(sps[(model, layout, "gloo")])
        print(f"| {model}, {layout[0]} hosts x {layout[1]} | {m[0]:.0f} ({m[1]:.0f}-{m[2]:.0f}) | "
              f"{g[0]:.0f} ({g[1]:.0f}-{g[2]:.0f}) | {g[0] / m[0]:.2f} |")
    print("\n| buffer | all-reduce | MPI busbw GB/s | Gloo busbw GB/s | Gloo / MPI |")
    print("|---|---|---|---|---|")
    for s in sizes:
        for kind in ("bucketed", "raw"):
            m, g = summary(bw[(s, kind, "mpi")]), summary(bw[(s, kind, "gloo")])
            label = "Tandem's bucketed (25 MiB)" if kind == "bucketed" else "one raw call"
            print(f"| {size_label(s)} | {label} | {m[0]:.2f} ({m[1]:.2f}-{m[2]:.2f}) | "
                  f"{g[0]:.2f} ({g[1]:.2f}-{g[2]:.2f}) | {g[0] / m[0]:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"samples_per_s": {f"{m} {l[0]}x{l[1]} {lau}": v for (m, l, lau), v in sps.items()},
                       "busbw": {f"{s} {k} {lau}": v for (s, k, lau), v in bw.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
