#!/usr/bin/env python3
"""An alpha-beta cost model of Tandem's data-parallel training step, fitted on this machine's
cluster measurements (benchmarks/cluster_scaling.py), checked against the measured multi-host step
times, then used to predict the efficiency of data-parallel training on H100 clusters.

  python3 benchmarks/scaling_model.py cluster_scaling.json [--plot benchmarks/scaling_model.png]

Prints markdown tables; exits 1 when a prediction misses its measured step time by more than 15%.

The step (one rank):  forward + backward + optimizer + the part of the all-reduce that backward
does not hide. Gradients travel in buckets planned as dist/host_gradient_sync.cpp plans them
(contiguous, from the last layer back, closed once a bucket holds --bucket-mb); a bucket can leave
when backward has finished its first layer, backward's time is split over the layers by their
backward FLOPs, and one communication thread sends the buckets one after the other. Without
overlap every bucket goes after backward.

An all-reduce of n bytes over p ranks:
  flat ring:  2(p-1) a + 2(p-1)/p n b
  two-level:  [2(L-1) a_nv + 2(L-1)/L n b_nv] + [2(N-1) a_net + 2(N-1)/N (n/L) b_net]
              (reduce-scatter in the node, all-reduce of each rank's n/L across N nodes, all-gather)
On a link shaped with tc's token bucket (tbf) the first `burst` bytes after an idle spell leave at the
veth's speed: each step's buckets get that burst, refilled while the step computes. Here a and b are
fitted per link shaping from raw MPI_Allreduce timings between the two namespace
hosts (p = 2: t = 2a + n b, least squares in relative error over 4 KiB .. 4 MiB, the sizes of
Tandem's buckets for these models; larger messages through a shaped link are slower again, see
RESULTS.md); compute times are measured on a
layout that shares the cores the same way (1 host x 2 ranks for 2 x 1, 1 x 4 for 2 x 2).
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_scaling import SHAPES  # noqa: E402  the tc rates and bursts the measurements ran under

# H100 cluster figures (sources in benchmarks/RESULTS.md): NVLink 4 in the node, ring busbw as
# nccl-tests reports it on 8 H100s; 8 x 400 Gb/s NDR InfiniBand, one NIC per GPU (rail-optimised),
# nccl-tests busbw per NIC; per-step latencies of NCCL's Ring/Simple protocol from its tuning model
# (src/graph/tuning.cc: 8.4 us a call, 3.4 us a step over NVLink, 9.6 us a step over the network).
H100 = {"gpus_per_node": 8, "busbw_nvlink": 370e9, "busbw_net": 46e9, "a_nv": 3.4e-6, "a_net": 9.6e-6,
        "call": 8.4e-6}

# The models predicted at scale: compute per step on one H100 and the gradient bytes (fp32).
# cnn: Tandem's own figure on the H200 (116,683 samples/s at batch 256, RESULTS.md), bucket plan of
# the real model. The 25M and 350M models are the sizes of ResNet-50 and BERT-Large: their step
# times are assumptions stated in RESULTS.md (ResNet-50 at batch 256 and ~3,000 images/s per GPU:
# 85 ms; BERT-Large, batch 32 x 512 tokens, 6 x params x tokens FLOPs at 40% of 989 TFLOP/s: 85 ms),
# with backward 2/3 of the step and gradients ready evenly through it.
SCALE_MODELS = {"cnn": {"step": 256 / 116683.0, "params": None},
                "25M": {"step": 0.085, "params": 25.6e6},
                "350M": {"step": 0.085, "params": 340e6}}


def layer_table(spec):
    """Per layer of a Sequential spec: trainable parameters and forward FLOPs per sample."""
    h, w, c = spec["input_shape"]
    shape = [h, w, c]
    out = []
    for layer in spec["layers"]:
        t = layer["type"]
        params, flops = 0, 0
        if t == "Conv2D":
            kh, kw = layer["kernel_size"]
            sh, sw = layer.get("strides", [1, 1])
            f = layer["filters"]
            if layer.get("padding", "valid") == "same":
                ho, wo = math.ceil(shape[0] / sh), math.ceil(shape[1] / sw)
            else:
                ho, wo = (shape[0] - kh) // sh + 1, (shape[1] - kw) // sw + 1
            params = kh * kw * shape[2] * f + (f if layer.get("use_bias", True) else 0)
            flops = 2 * ho * wo * kh * kw * shape[2] * f
            shape = [ho, wo, f]
        elif t == "MaxPool2D":
            ph, pw = layer.get("pool_size", [2, 2])
            sh, sw = layer.get("strides", [ph, pw])
            shape = [(shape[0] - ph) // sh + 1, (shape[1] - pw) // sw + 1, shape[2]]
        elif t == "Flatten":
            shape = [math.prod(shape)]
        elif t == "Dense":
            params = shape[-1] * layer["units"] + (layer["units"] if layer.get("use_bias", True) else 0)
            flops = 2 * shape[-1] * layer["units"]
            shape = shape[:-1] + [layer["units"]]
        elif t == "BatchNormalization":
            params = 2 * shape[-1]
        out.append({"type": t, "params": params, "flops": flops})
    return out


def plan_buckets(layers, bucket_bytes):
    """Buckets as dist/host_gradient_sync.cpp plans them: [(bytes, index of its first layer)], last
    layer first."""
    with_params = [i for i, l in enumerate(layers) if l["params"]]
    floats = max(1, bucket_bytes // 4)
    out, acc = [], 0
    for k in range(len(with_params) - 1, -1, -1):
        i = with_params[k]
        acc += layers[i]["params"]
        if acc >= floats or k == 0:
            out.append((4 * acc, i))
            acc = 0
    return out


def ready_times(layers, buckets, t_backward):
    """When backward has finished each bucket's first layer (backward FLOPs: 2x forward; the first
    layer with parameters computes no input gradient)."""
    first = min(i for i, l in enumerate(layers) if l["params"])
    bwd = [(l["flops"] if i == first else 2 * l["flops"]) for i, l in enumerate(layers)]
    total = sum(bwd) or 1
    return [t_backward * sum(bwd[b[1]:]) / total for b in buckets]


def exposed_comm(buckets, ready, t_backward, t_bucket, overlap):
    """The all-reduce time the step waits for after backward: one thread, buckets in order."""
    if not overlap:
        return sum(t_bucket(b[0]) for b in buckets)
    end = 0.0
    for b, r in zip(buckets, ready):
        end = max(end, r) + t_bucket(b[0])
    return max(0.0, end - t_backward)


def fit_link(rows):
    """Least squares t = c0 + c1 n over raw MPI_Allreduce timings of 2 ranks: a = c0 / 2, b = c1."""
    xs = [r["bytes"] for r in rows]
    ys = [r["mpi_us"] * 1e-6 for r in rows]
    # Relative errors: the small messages (latency) weigh as much as the large ones (bandwidth).
    wts = [1.0 / (y * y) for y in ys]
    sw = sum(wts)
    mx = sum(w * x for w, x in zip(wts, xs)) / sw
    my = sum(w * y for w, y in zip(wts, ys)) / sw
    c1 = sum(w * (x - mx) * (y - my) for w, x, y in zip(wts, xs, ys)) / sum(w * (x - mx) ** 2 for w, x in zip(wts, xs))
    c0 = my - c1 * mx
    return {"a": max(c0, 0.0) / 2, "b": c1}


def tc_bytes(size):
    """tc's size units: "256kb" is 256 KiB, "1mb" 1 MiB; "1gbit" and "200mbit" are rates in bit/s."""
    units = {"kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "kbit": 1000 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8}
    for u in sorted(units, key=len, reverse=True):
        if size.endswith(u):
            return float(size[:-len(u)]) * units[u]
    return float(size)


def shaped_bucket_time(link, shape, idle_s):
    """t(n) = 2a + (n - burst) b for each bucket of one step: tc's token bucket lets `burst` bytes
    through at the veth's speed after the link has idled long enough to refill it (the compute part
    of the step), then holds the sender to the rate. An unshaped link has no burst."""
    rate, burst = SHAPES.get(shape, (None, None))
    left = [min(tc_bytes(burst), idle_s * tc_bytes(rate))] if rate else [0.0]

    def t(n):
        free = min(n, left[0])
        left[0] -= free
        return 2 * link["a"] + (n - free) * link["b"]
    return t


def check_against(data):
    """Predicted and measured step times of every multi-host run."""
    rows = data["configs"]
    ref = {(r["model"], r["per_host"]): r for r in rows if r["hosts"] == 1}
    links = {}
    for shape in data["latency"]:
        links[shape] = fit_link(data["latency"][shape])
    out = []
    for r in rows:
        if r["hosts"] == 1:
            continue
        base = ref[(r["model"], r["per_host"] * r["hosts"])]
        layers = layer_table(data["specs"][r["model"]])
        buckets = plan_buckets(layers, int(r["bucket_mb"] * 1048576))
        link = links[r["shape"]]
        t_bwd = base["backward"] / 1e3
        compute = (base["step"] - base["allreduce wait"]) / 1e3
        local = base["allreduce wait"] / 1e3 if r["per_host"] > 1 else 0.0  # the in-node part (shared memory)
        ready = ready_times(layers, buckets, t_bwd)
        t_bucket = shaped_bucket_time(link, r["shape"], compute)
        wait = exposed_comm(buckets, ready, t_bwd, t_bucket, r["overlap"]) + local
        out.append({**{k: r[k] for k in ("model", "hosts", "per_host", "shape", "overlap", "bucket_mb")},
                    "measured_ms": r["step"], "measured_range": r["step_range"],
                    "measured_wait_ms": r["allreduce wait"], "predicted_ms": (compute + wait) * 1e3,
                    "predicted_wait_ms": wait * 1e3, "compute_ms": compute * 1e3})
    return links, out


def predict_scale(spec_cnn, gpus, model, bucket_mb, algo, hw=H100):
    """Efficiency (step on one GPU / step on `gpus` GPUs, weak scaling) of one model on H100 nodes."""
    m = SCALE_MODELS[model]
    t_step = m["step"]
    t_bwd = t_step * 2 / 3
    if m["params"] is None:
        layers = layer_table(spec_cnn)
    else:  # gradients ready evenly through backward: 100 equal layers
        layers = [{"params": m["params"] / 100, "flops": 1.0} for _ in range(100)]
    buckets = plan_buckets(layers, int(bucket_mb * 1048576))
    ready = ready_times(layers, buckets, t_bwd)
    L = min(gpus, hw["gpus_per_node"])
    N = max(1, gpus // L)

    def t_allreduce(n):
        if gpus == 1:
            return 0.0
        if algo == "flat" or N == 1:  # one ring through every GPU; across nodes it runs at the NIC's speed
            p = gpus
            a = hw["a_nv"] if N == 1 else hw["a_net"]
            bw = hw["busbw_nvlink"] if N == 1 else hw["busbw_net"]
            return hw["call"] + 2 * (p - 1) * a + n / bw  # busbw already counts 2(p-1)/p
        t_node = hw["call"] + 2 * (L - 1) * hw["a_nv"] + n / hw["busbw_nvlink"]
        t_net = hw["call"] + 2 * (N - 1) * hw["a_net"] + (n / L) / hw["busbw_net"]
        return t_node + t_net

    wait = exposed_comm(buckets, ready, t_bwd, t_allreduce, True)
    return t_step / (t_step + wait)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("measurements", help="the JSON written by benchmarks/cluster_scaling.py")
    ap.add_argument("--plot", help="write the efficiency-vs-GPUs plot (PNG) here")
    a = ap.parse_args()
    data = json.load(open(a.measurements))
    links, checks = check_against(data)

    print("## Links (raw MPI_Allreduce between the two hosts, fitted t = 2a + n b)\n")
    print("| link | a (us) | 1/b (MB/s) |\n|---|---|---|")
    for shape, l in links.items():
        print(f"| {shape} | {l['a'] * 1e6:.0f} | {1e-6 / l['b']:.0f} |")
    print("\n## The model against the measured step times (rank 0, median per step)\n")
    print("| model | layout | link | overlap | bucket MiB | compute ms | wait ms measured / model | "
          "step ms measured (min-max) | model | error |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for c in checks:
        err = c["predicted_ms"] / c["measured_ms"] - 1
        worst = max(worst, abs(err))
        lo, hi = c["measured_range"]
        print(f"| {c['model']} | {c['hosts']}x{c['per_host']} | {c['shape']} | {'on' if c['overlap'] else 'off'} | "
              f"{c['bucket_mb']:g} | {c['compute_ms']:.1f} | {c['measured_wait_ms']:.1f} / {c['predicted_wait_ms']:.1f} | "
              f"{c['measured_ms']:.1f} ({lo:.1f}-{hi:.1f}) | {c['predicted_ms']:.1f} | {err * 100:+.1f}% |")
    print(f"\nlargest error: {worst * 100:.1f}%")

    gpus = [1, 8, 64, 512]
    print("\n## Predicted weak-scaling efficiency on H100 nodes (8 GPUs, NVLink; 8 x 400 Gb/s IB)\n")
    print("| model | algorithm | bucket MiB | " + " | ".join(f"{g} GPUs" for g in gpus[1:]) + " |")
    print("|---|---|---|" + "---|" * (len(gpus) - 1))
    curves = {}
    for model in SCALE_MODELS:
        for algo in ("flat", "two-level"):
            for bucket in (1, 4, 25, 100):
                effs = [predict_scale(data["specs"]["cnn"], g, model, bucket, algo) for g in gpus]
                curves[(model, algo, bucket)] = effs
                print(f"| {model} | {algo} | {bucket} | " + " | ".join(f"{e * 100:.1f}%" for e in effs[1:]) + " |")
    if a.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fine = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for model, color in zip(SCALE_MODELS, ("tab:red", "tab:blue", "tab:green")):
            for algo, style in (("two-level", "-"), ("flat", ":")):
                best = max((25, 4, 1, 100), key=lambda b: predict_scale(data["specs"]["cnn"], 512, model, b, algo))
                ys = [predict_scale(data["specs"]["cnn"], g, model, best, algo) * 100 for g in fine]
                ax.plot(fine, ys, style, color=color, marker="o", ms=3, label=f"{model}, {algo}, {best} MiB buckets")
        ax.axhline(90, color="grey", lw=0.8, ls="--")
        ax.text(1.1, 91, "Horovod: 90% at 512 GPUs (ResNet-101)", fontsize=7, color="grey")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("GPUs (H100, 8 per node)")
        ax.set_ylabel("weak-scaling efficiency (%)")
        ax.set_ylim(0, 102)
        ax.set_title("Tandem's data-parallel step, alpha-beta model")
        ax.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        fig.savefig(a.plot, dpi=110)
        print(f"\nwrote {a.plot}")
    return 0 if worst <= 0.15 else 1


if __name__ == "__main__":
    sys.exit(main())
