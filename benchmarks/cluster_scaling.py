#!/usr/bin/env python3
"""Data-parallel scaling across hosts: 2 network-namespace hosts x 1 and x 2 ranks against 1 rank
(weak scaling: the same per-replica batch), with every host's link unshaped and shaped with `tc tbf`,
the gradient all-reduce overlapping backward or after it, and bucket sizes 1, 4 and 25 MiB; one host
with 2 and 4 ranks (shared memory) for each layout's compute time on the shared cores; then the bus
bandwidth of Tandem's bucketed and tree all-reduces across the hosts against a raw MPI_Allreduce
of the same buffer, and a latency sweep for benchmarks/scaling_model.py. Needs root (namespaces).

  python3 benchmarks/cluster_scaling.py --tandem build/tandem --json /tmp/cluster_scaling.json
  python3 benchmarks/scaling_model.py /tmp/cluster_scaling.json       # the model, fitted and checked

Each host is a namespace with its own network stack but the same two cores: every rank runs one
compute thread (--threads 1), the one-rank baseline too, so that 2 x 1 differs from 1 x 2 by the
link alone (2 x 2 shares the two cores four ways, as 1 x 4 does). Configurations take turns in rotated order within each round (this VM's
speed drifts), and each figure is the median over rounds with its min-max.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "cluster"))
from cluster import Cluster, Refused, run  # noqa: E402

DATA = os.environ.get("TANDEM_DATA", "/usr/share/datasets/fashion-mnist")
# (name, tbf rate, burst): burst >= rate / HZ (250) as the multi-host sheet says
SHAPES = {"unshaped": (None, None), "1gbit": ("1gbit", "1mb"), "200mbit": ("200mbit", "256kb")}


def phases(trace_path, skip_steps):
    """Median per-step durations (ms) of rank 0's phases after the first `skip_steps` steps."""
    events = json.load(open(trace_path))
    if isinstance(events, dict):
        events = events.get("traceEvents", [])
    mine = [e for e in events if e.get("ph") == "X" and e.get("pid") == 0]
    steps = sorted((e for e in mine if e["name"] == "step"), key=lambda e: e["ts"])[skip_steps:]
    out = {k: [] for k in ("step", "forward", "backward", "allreduce wait", "optimizer")}
    for s in steps:
        inside = [e for e in mine if e["tid"] == s["tid"] and s["ts"] <= e["ts"] <= s["ts"] + s["dur"]]
        out["step"].append(s["dur"] / 1e3)
        for k in ("forward", "backward", "allreduce wait", "optimizer"):
            out[k].append(sum(e["dur"] for e in inside if e["name"] == k) / 1e3)
    return {k: statistics.median(v) if v else None for k, v in out.items()}


def train(cluster, tandem, model, hosts, per_host, samples, per_replica, epochs, extra, tmp):
    """One run of `hosts` x `per_host` ranks; its samples/s over the epochs after the first and rank
    0's median step phases, and the model's spec (for the cost model's layer shapes)."""
    ranks = hosts * per_host
    out = tempfile.mkdtemp(prefix="scal-", dir=tmp)
    timeline = os.path.join(out, "timeline.json")
    args = ["train", "--data", DATA, "--model", model, "--threads", "1", "--epochs", str(epochs),
            "--train-samples", str(samples), "--validation-size", "0", "--optimizer", "sgd",
            "--batch-size", str(per_replica * ranks), "--timeline", timeline, "--output", out] + extra
    if ranks == 1:
        cmd = [cluster.inhost, "h1", tandem] + args
    else:
        cmd = cluster.mpirun(ranks, ",".join(f"h{i + 1}:{per_host}" for i in range(hosts)),
                             [tandem] + args + ["--strategy", "multi-worker"])
    r = run(cmd, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-30:])} failed ({r.returncode}): {r.stderr[-600:]}")
    secs = json.load(open(os.path.join(out, "history.json")))["epoch_seconds"][1:]
    steps_per_epoch = -(-samples // (per_replica * ranks))
    res = {"samples_per_s": samples * len(secs) / sum(secs)}
    res.update(phases(timeline, steps_per_epoch))
    res["spec"] = json.load(open(os.path.join(out, "model", "1", "model.json")))["spec"]
    run(["rm", "-rf", out])
    return res


def allreduce(cluster, bench, shape, tree, sizes, iters, rounds):
    cmd = cluster.mpirun(2, "h1,h2", [bench, "--iters", str(iters), "--rounds", str(rounds),
                                      "--sizes", ",".join(map(str, sizes))] + (["--tree"] if tree else []))
    r = run(cmd, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"allreduce_bench failed at {shape}: {r.stderr[-400:]}")
    rows = []
    for line in r.stdout.splitlines():
        f = line.split()
        if len(f) == 6 and f[0].isdigit():
            rows.append({"bytes": int(f[0]), "tandem_us": float(f[1]), "tandem_busbw": float(f[2]),
                         "mpi_us": float(f[3]), "mpi_busbw": float(f[4]), "ratio": float(f[5])})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tandem", default="build/tandem")
    ap.add_argument("--allreduce-bench", default="build/benchmarks/allreduce_bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="the first is warm-up")
    ap.add_argument("--per-replica-batch", type=int, default=64)
    ap.add_argument("--cnn-samples", type=int, default=1280)
    ap.add_argument("--mlp-samples", type=int, default=12800)
    ap.add_argument("--shapes", default="unshaped,1gbit,200mbit")
    ap.add_argument("--json", default="cluster_scaling.json", help="where the measurements go")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("cluster_scaling: needs root to create network namespaces")
    tandem, bench = os.path.abspath(a.tandem), os.path.abspath(a.allreduce_bench)
    shapes = a.shapes.split(",")
    for s in shapes:
        if s not in SHAPES:
            sys.exit(f"cluster_scaling: unknown shape {s!r} (choose from {', '.join(SHAPES)})")

    # (model, hosts, ranks per host, shape, overlap, bucket MiB). One host with 2 and 4 ranks (shared
    # memory, no link) gives the compute time of each layout with its share of the two cores.
    configs = []
    for model in ("cnn", "mlp"):
        configs += [(model, 1, 1, None, True, 25), (model, 1, 2, None, True, 25), (model, 1, 4, None, True, 25)]
    for s in shapes:
        for model in ("cnn", "mlp"):
            configs += [(model, 2, 1, s, True, 25), (model, 2, 1, s, False, 25), (model, 2, 2, s, True, 25)]
        configs += [("cnn", 2, 1, s, True, 1), ("cnn", 2, 1, s, True, 4)]
    tmp = tempfile.mkdtemp(prefix="tandem-cluster-scaling-")
    try:
        cluster = Cluster(tmp, 2)
    except Refused as e:
        sys.exit(f"cluster_scaling: {e}")
    results = {"configs": [], "allreduce": {}, "latency": {}, "specs": {},
               "per_replica_batch": a.per_replica_batch}
    try:
        samples = {}
        for rnd in range(a.rounds):
            k = rnd * 5 % len(configs)
            for cfg in configs[k:] + configs[:k]:
                model, hosts, per_host, shape, overlap, bucket = cfg
                cluster.shape(*SHAPES[shape or "unshaped"])
                extra = ["--bucket-mb", str(bucket)] + ([] if overlap else ["--no-overlap"])
                n = a.cnn_samples if model == "cnn" else a.mlp_samples
                r = train(cluster, tandem, model, hosts, per_host, n, a.per_replica_batch, a.epochs, extra, tmp)
                results["specs"][model] = r.pop("spec")
                samples.setdefault(cfg, []).append(r)
                print(f"round {rnd + 1}: {model} {hosts}x{per_host} {shape or ''} overlap={overlap} bucket={bucket}: "
                      f"{r['samples_per_s']:.1f} samples/s, step {r['step']:.1f} ms, wait {r['allreduce wait']:.1f} ms",
                      flush=True)
        for cfg, rs in samples.items():
            model, hosts, per_host, shape, overlap, bucket = cfg
            row = {"model": model, "hosts": hosts, "per_host": per_host, "shape": shape, "overlap": overlap,
                   "bucket_mb": bucket}
            for key in rs[0]:
                vals = [r[key] for r in rs if r[key] is not None]
                row[key] = statistics.median(vals) if vals else None
                row[key + "_range"] = [min(vals), max(vals)] if vals else None
            results["configs"].append(row)

        for s in shapes:
            cluster.shape(*SHAPES[s])
            slow = s == "200mbit"
            sizes = [1 << 20, 4 << 20, 16 << 20] + ([] if slow else [64 << 20])
            iters, rounds = (3, 3) if slow else (10, 5)
            results["allreduce"][s] = {
                "bucketed": allreduce(cluster, bench, s, False, sizes, iters, rounds),
                "tree": allreduce(cluster, bench, s, True, sizes, iters, rounds)}
            # Latency and bandwidth of one message size at a time (the raw MPI column), for the fit.
            results["latency"][s] = allreduce(cluster, bench, s, False,
                                              [4096, 16384, 65536, 262144, 1 << 20, 4 << 20], 20 if slow else 50, 5)
            print(f"all-reduce at {s}: " + ", ".join(
                f"{r['bytes'] >> 20} MiB {r['tandem_busbw']:.3f}/{r['mpi_busbw']:.3f} GB/s"
                for r in results["allreduce"][s]["bucketed"]), flush=True)
    finally:
        cluster.down()
        run(["rm", "-rf", tmp])
    with open(a.json, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
