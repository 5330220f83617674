#!/usr/bin/env python3
"""GPU training throughput: Tandem vs PyTorch on the same GPU, same models, batch sizes, data,
optimizer (SGD, momentum 0.9, Nesterov, lr 0.01) and precision; plus the GPU's cuBLAS SGEMM peak
and the fraction of it the cnn achieves.

  python3 benchmarks/gpu/bench_gpu.py --tandem build-gpu/tandem --data DIR \
      [--sgemm-bin build-gpu/sgemm_peak] [--precision fp32|tf32] [--compile large|all|none] \
      [--samples 25600] [--epochs 3] [--out results.json]

Each framework trains --epochs epochs on the first --samples training images of DIR (IDX files,
Fashion-MNIST layout); samples/s is measured over the epochs after the first (warm-up excluded:
cuDNN algorithm search, torch.compile, allocator growth). Data lives on the GPU for both: Tandem
uploads the dataset once per backend; the PyTorch loop gathers each batch from a uint8 tensor on
the GPU and normalises it there, as Tandem's gather_batch does. PyTorch runs eager and, where it
works, torch.compile (the model; the optimizer step stays eager). Precision: fp32 disables TF32
in PyTorch (matmul and cuDNN), as Tandem's default; tf32 enables it on both sides
(TANDEM_GPU_PRECISION=tf32). Runtime about 2 minutes on an H100.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

CASES = [("mlp", 32), ("mlp", 256), ("cnn", 100), ("cnn", 256)]


# ---- FLOP counts ---------------------------------------------------------------------------------

def layer_macs(model):
    """Forward multiply-accumulates per sample of each GEMM-like layer, in order."""
    if model == "mlp":
        return [784 * 300, 300 * 100, 100 * 10]
    return [28 * 28 * 64 * 7 * 7 * 1,      # conv2d 7x7, 1 -> 64, 28x28
            14 * 14 * 128 * 3 * 3 * 64,    # conv2d_1 3x3, 64 -> 128, 14x14
            14 * 14 * 128 * 3 * 3 * 128,   # conv2d_2 3x3, 128 -> 128, 14x14
            7 * 7 * 128 * 64,              # dense 6272 -> 64
            64 * 10]                       # dense_1


def train_flops_per_sample(model):
    """Forward + weight gradient + input gradient (none for the first layer), 2 FLOPs per MAC.
    Elementwise work (bias, ReLU, pooling, loss, optimizer) is not counted."""
    macs = layer_macs(model)
    fwd = sum(macs)
    return 2 * (fwd + fwd + (fwd - macs[0]))


# ---- data ---------------------------------------------------------------------------------------

def read_idx(data_dir, name):
    for path, opener in ((os.path.join(data_dir, name + ".gz"), gzip.open), (os.path.join(data_dir, name), open)):
        if os.path.exists(path):
            with opener(path, "rb") as f:
                return f.read()
    raise FileNotFoundError(f"{name}[.gz] not found in {data_dir}")


def load_train(data_dir, samples):
    import numpy as np
    img = read_idx(data_dir, "train-images-idx3-ubyte")
    lab = read_idx(data_dir, "train-labels-idx1-ubyte")
    n, h, w = (int.from_bytes(img[i:i + 4], "big") for i in (4, 8, 12))
    x = np.frombuffer(img, np.uint8, offset=16).reshape(n, h, w, 1)[:samples]
    y = np.frombuffer(lab, np.uint8, offset=8)[:samples]
    return x, y


# ---- Tandem -------------------------------------------------------------------------------------

def tandem_case(binary, data_dir, model, batch, samples, epochs, precision, timeout, extra=(), env_extra=None):
    out = tempfile.mkdtemp(prefix="tandem-gpu-bench-")
    env = dict(os.environ, TANDEM_DATA=data_dir, TANDEM_GPU_PRECISION=precision, **(env_extra or {}))
    cmd = [binary, "train", "--device", "gpu:0", "--model", model, "--batch-size", str(batch),
           "--epochs", str(epochs), "--train-samples", str(samples), "--validation-size", "0",
           "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.9", "--nesterov", "--lr-schedule", "none",
           "--data", data_dir, "--output", out] + list(extra)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = [l for l in p.stdout.splitlines() if l.strip()][-2:]
        raise RuntimeError(f"tandem exited with {p.returncode}: " + " | ".join(tail))
    hist = json.load(open(os.path.join(out, "history.json")))
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    secs = hist["epoch_seconds"][1:] or hist["epoch_seconds"]
    return {"samples_per_second": samples * len(secs) / sum(secs),
            "samples_per_second_all_epochs": metrics.get("samples_per_second"),
            "epoch_seconds": hist["epoch_seconds"], "wall_seconds": wall,
            "final_loss": hist["loss"][-1] if hist.get("loss") else None}


# ---- PyTorch ------------------------------------------------------------------------------------

def torch_model(torch, name):
    nn = torch.nn
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                             nn.Linear(100, 10))
    return nn.Sequential(
        nn.Conv2d(1, 64, 7, padding=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6272, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10))


def torch_case(torch, x_gpu, y_gpu, model_name, batch, samples, epochs, compiled):
    dev = x_gpu.device
    torch.manual_seed(0)
    model = torch_model(torch, model_name).to(dev).to(memory_format=torch.channels_last)
    run = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    steps = samples // batch  # drop_last: every step has the same shape (no recompiles)
    times = []
    for _ in range(epochs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(samples, device=dev)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            # NHWC uint8 -> NCHW view with channels_last strides, normalised on the GPU.
            xb = x_gpu[idx].permute(0, 3, 1, 2).float().div_(255.0)
            yb = y_gpu[idx]
            opt.zero_grad(set_to_none=True)
            logits = run(xb)
            loss = loss_fn(logits, yb)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * batch
            correct += (logits.argmax(1) == yb).sum()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    measured = times[1:] or times
    return {"samples_per_second": steps * batch * len(measured) / sum(measured), "epoch_seconds": times,
            "final_loss": float(loss_sum) / (steps * batch)}


# ---- SGEMM peak ---------------------------------------------------------------------------------

def sgemm_peak(sgemm_bin, torch, precision):
    """cuBLAS SGEMM FLOP/s at N=8192: from the standalone sgemm_peak binary, else via torch.matmul
    (also cuBLAS)."""
    if sgemm_bin and os.path.exists(sgemm_bin):
        p = subprocess.run([sgemm_bin], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        if p.returncode == 0:
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r["source"] = "sgemm_peak (cuBLAS)"
            return r
        print(f"sgemm_peak failed: {p.stdout[-500:]}", file=sys.stderr)
    if torch is None:
        return None
    res = {"source": "torch.matmul (cuBLAS)", "n": 8192}
    n = 8192
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    for mode in ("fp32", "tf32"):
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        for _ in range(3):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        iters = 20
        for _ in range(iters):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        res[f"{mode}_flops"] = 2 * n ** 3 * iters / (time.perf_counter() - t0)
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    return res


# ---- main ---------------------------------------------------------------------------------------

def fmt_rate(v):
    return "n/a" if v is None else f"{v:,.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tandem", required=True, help="path to the tandem binary (built with CUDA)")
    ap.add_argument("--data", default=os.environ.get("TANDEM_DATA", "/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--sgemm-bin", default="", help="benchmarks/gpu/sgemm_peak.cu built (see its header)")
    ap.add_argument("--precision", choices=["fp32", "tf32"], default="fp32")
    ap.add_argument("--torch-cudnn", choices=["benchmark", "deterministic"], default="benchmark",
                    help="PyTorch's cuDNN algorithm choice: timed, any algorithm (its usual fast setting), or "
                         "timed among deterministic ones (Tandem's default)")
    ap.add_argument("--compile", choices=["none", "large", "all"], default="large",
                    help="torch.compile for no case, the batch-256 cases (default), or all cases")
    ap.add_argument("--tandem-nondeterministic", action="store_true",
                    help="also run Tandem's cnn cases with TANDEM_CUDNN_DETERMINISTIC=0 (any cuDNN algorithm, "
                         "as PyTorch's benchmark mode allows)")
    ap.add_argument("--samples", type=int, default=25600, help="training samples per epoch (divisible by 32, 100, 256)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=120, help="seconds per Tandem run")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    a = ap.parse_args()

    results = {"precision": a.precision, "samples": a.samples, "epochs": a.epochs, "cases": []}
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch.cuda.is_available() is False")
        tf32 = a.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = a.torch_cudnn == "deterministic"
        results["torch_cudnn"] = a.torch_cudnn
        results["torch_version"] = torch.__version__
        results["gpu"] = torch.cuda.get_device_name(0)
    except Exception as e:  # no PyTorch: Tandem figures only
        print(f"PyTorch unavailable ({e}): Tandem figures only", file=sys.stderr)
        torch = None

    x_gpu = y_gpu = None
    if torch is not None:
        x, y = load_train(a.data, a.samples)
        if len(x) < a.samples:
            a.samples = len(x)
        x_gpu = torch.from_numpy(x.copy()).cuda()
        y_gpu = torch.from_numpy(y.astype("int64")).cuda()

    for model, batch in CASES:
        row = {"model": model, "batch": batch, "train_flops_per_sample": train_flops_per_sample(model)}
        try:
            row["tandem"] = tandem_case(a.tandem, a.data, model, batch, a.samples, a.epochs, a.precision, a.timeout)
        except Exception as e:
            row["tandem_error"] = str(e)[-500:]
        if a.tandem_nondeterministic and model == "cnn":
            try:
                row["tandem_nondet"] = tandem_case(a.tandem, a.data, model, batch, a.samples, a.epochs, a.precision,
                                                   a.timeout, env_extra={"TANDEM_CUDNN_DETERMINISTIC": "0"})
            except Exception as e:
                row["tandem_nondet_error"] = str(e)[-500:]
        if torch is not None:
            try:
                row["torch_eager"] = torch_case(torch, x_gpu, y_gpu, model, batch, a.samples, a.epochs, False)
            except Exception as e:
                row["torch_eager_error"] = str(e)[-500:]
            if a.compile == "all" or (a.compile == "large" and batch >= 256):
                try:
                    row["torch_compile"] = torch_case(torch, x_gpu, y_gpu, model, batch, a.samples, a.epochs, True)
                except Exception as e:  # torch.compile needs a working Triton/compiler toolchain
                    row["torch_compile_error"] = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        results["cases"].append(row)
        print(f"done: {model} batch {batch}", file=sys.stderr, flush=True)

    peak = sgemm_peak(a.sgemm_bin, torch, a.precision)
    results["sgemm"] = peak
    peak_flops = None
    if peak:
        peak_flops = peak.get("tf32_flops" if a.precision == "tf32" else "fp32_flops")

    # ---- the table ----
    def sps(row, key):
        return row.get(key, {}).get("samples_per_second")

    lines = [f"GPU benchmark ({a.precision}, PyTorch cuDNN {a.torch_cudnn}; samples/s over epochs 2..{a.epochs} of {a.samples} samples)",
             f"{'case':<14}{'tandem':>12}{'torch eager':>13}{'ratio':>7}{'torch.compile':>15}{'ratio':>7}"]
    for row in results["cases"]:
        t, e, c = sps(row, "tandem"), sps(row, "torch_eager"), sps(row, "torch_compile")
        r_e = f"{t / e:.2f}" if t and e else "-"
        r_c = f"{t / c:.2f}" if t and c else "-"
        lines.append(f"{row['model'] + ' b' + str(row['batch']):<14}{fmt_rate(t):>12}{fmt_rate(e):>13}{r_e:>7}"
                     f"{fmt_rate(c) if c else ('failed' if 'torch_compile_error' in row else '-'):>15}{r_c:>7}")
        if "tandem_error" in row:
            lines.append(f"  tandem error: {row['tandem_error'][-200:]}")
    for row in results["cases"]:
        t, e = sps(row, "tandem_nondet"), sps(row, "torch_eager")
        if t:
            lines.append(f"{row['model']} b{row['batch']} tandem with nondeterministic cuDNN algorithms: {fmt_rate(t)} "
                         f"samples/s" + (f", {t / e:.2f}x torch eager" if e else ""))
        elif "tandem_nondet_error" in row:
            lines.append(f"  tandem (nondeterministic) error: {row['tandem_nondet_error'][-200:]}")
    if peak:
        lines.append(f"cuBLAS SGEMM peak (N={peak.get('n')}): fp32 {peak['fp32_flops'] / 1e12:.1f} TFLOP/s, "
                     f"tf32 {peak['tf32_flops'] / 1e12:.1f} TFLOP/s [{peak['source']}]")
    for row in results["cases"]:
        if row["model"] != "cnn":
            continue
        for key, label in (("tandem", "tandem"), ("torch_eager", "torch eager"), ("torch_compile", "torch.compile")):
            v = sps(row, key)
            if not v:
                continue
            achieved = v * row["train_flops_per_sample"]
            row[key]["achieved_flops"] = achieved
            frac = f", {100 * achieved / peak_flops:.1f}% of the {a.precision} SGEMM peak" if peak_flops else ""
            if peak_flops:
                row[key]["fraction_of_sgemm_peak"] = achieved / peak_flops
            lines.append(f"cnn b{row['batch']} {label}: {achieved / 1e12:.2f} TFLOP/s achieved "
                         f"({row['train_flops_per_sample'] / 1e6:.0f} MFLOP/sample fwd+bwd){frac}")
    results["table"] = lines
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=2)
    print("\n".join(lines))
    return 1 if any("tandem_error" in row for row in results["cases"]) else 0


if __name__ == "__main__":
    sys.exit(main())
