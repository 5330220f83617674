#!/usr/bin/env python3
"""Per-kernel GPU time of a training step, Tandem and PyTorch side by side, from Nsight Compute.

  python3 benchmarks/gpu/profile_step.py --tandem BIN --data DIR [--model cnn] [--batch 256]
      [--skip 3000] [--count 600] [--out FILE.json]

Runs `ncu --metrics gpu__time_duration.sum --clock-control none` over a window of --count kernel
launches after skipping the first --skip (cuDNN's algorithm search and warm-up stay outside the
window), once for `tandem train` and once for the PyTorch loop of bench_gpu.py (eager, fp32,
cudnn.benchmark). Prints, for each, the kernels grouped by name with their share of the window's
GPU time, so the two implementations' layers can be compared kernel by kernel. ncu serialises
kernels, so the totals are GPU busy time, not wall time. Needs ncu on the PATH (Nsight Compute).
"""
import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def torch_worker(data, model, batch, samples, epochs):
    sys.path.insert(0, HERE)
    import bench_gpu
    import torch
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    x, y = bench_gpu.load_train(data, samples)
    xg = torch.from_numpy(x.copy()).cuda()
    yg = torch.from_numpy(y.astype("int64")).cuda()
    bench_gpu.torch_case(torch, xg, yg, model, batch, samples, epochs, False)


def run_ncu(ncu, cmd, skip, count, env):
    fd, log = tempfile.mkstemp(suffix=".csv")
    os.close(fd)  # ncu writes the file itself
    full = [ncu, "--clock-control", "none", "--metrics", "gpu__time_duration.sum", "--csv",
            "--print-units", "base", "--launch-skip", str(skip), "--launch-count", str(count),
            "--log-file", log] + cmd
    p = subprocess.run(full, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    if os.path.getsize(log) == 0:
        raise RuntimeError(f"ncu wrote no log (rc {p.returncode}): {p.stdout[-800:]}")
    text = open(log).read()
    start = text.find('"ID"')
    rows = list(csv.DictReader(io.StringIO(text[start:]))) if start >= 0 else []
    kernels = []
    for r in rows:
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        ns = float(r["Metric Value"].replace(",", ""))
        if r.get("Metric Unit") in ("usecond", "us"):
            ns *= 1e3
        elif r.get("Metric Unit") in ("msecond", "ms"):
            ns *= 1e6
        kernels.append((r["Kernel Name"], ns))
    return kernels, p.returncode, p.stdout[-800:]


def summarise(label, kernels):
    total = sum(ns for _, ns in kernels) or 1.0
    groups = {}
    for name, ns in kernels:
        short = name.split("(")[0][:80]
        g = groups.setdefault(short, [0, 0.0])
        g[0] += 1
        g[1] += ns
    lines = [f"---- {label}: {len(kernels)} kernels, {total / 1e3:,.0f} us GPU time in the window ----",
             f"{'share':>6} {'calls':>6} {'us/call':>9}  kernel"]
    for short, (n, ns) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"{100 * ns / total:5.1f}% {n:6d} {ns / n / 1e3:9.1f}  {short}")
    return lines, {"total_ns": total, "kernels": len(kernels),
                   "groups": {k: {"calls": v[0], "ns": v[1]} for k, v in groups.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tandem", help="path to the tandem binary (built with CUDA)")
    ap.add_argument("--data", default=os.environ.get("TANDEM_DATA", "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--samples", type=int, default=25600)
    ap.add_argument("--skip", type=int, default=3000)
    ap.add_argument("--count", type=int, default=600)
    ap.add_argument("--out", default="")
    ap.add_argument("--worker", choices=["torch"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        torch_worker(a.data, a.model, a.batch, a.samples, 2)
        return 0
    ncu = shutil.which("ncu") or "/usr/local/cuda/bin/ncu"
    if not os.path.exists(ncu):
        print("ncu (Nsight Compute) not found", file=sys.stderr)
        return 2
    out = tempfile.mkdtemp(prefix="tandem-profile-")
    env = dict(os.environ, TANDEM_DATA=a.data)
    runs = [("tandem", [a.tandem, "train", "--device", "gpu:0", "--model", a.model, "--batch-size", str(a.batch),
                        "--epochs", "2", "--train-samples", str(a.samples), "--validation-size", "0",
                        "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.9", "--nesterov",
                        "--lr-schedule", "none", "--data", a.data, "--output", out]),
            ("pytorch eager", [sys.executable, os.path.abspath(__file__), "--worker", "torch", "--data", a.data,
                               "--model", a.model, "--batch", str(a.batch), "--samples", str(a.samples)])]
    result = {}
    all_lines = []
    for label, cmd in runs:
        if label == "tandem" and not a.tandem:
            continue
        try:
            kernels, rc, tail = run_ncu(ncu, cmd, a.skip, a.count, env)
        except Exception as e:  # noqa: BLE001 - report and go on to the other framework
            all_lines.append(f"---- {label}: failed: {e}")
            continue
        lines, summary = summarise(f"{label} {a.model} b{a.batch}", kernels)
        summary["rc"] = rc
        if rc != 0:
            lines.append(f"(exit {rc}: {tail})")
        result[label] = summary
        all_lines += lines
    print("\n".join(all_lines))
    if a.out:
        json.dump({"model": a.model, "batch": a.batch, "runs": result, "table": all_lines}, open(a.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
