#!/usr/bin/env python3
"""Tandem on the GPU under each setting, Tandem alone (bench_gpu.py compares with PyTorch).
Default: the cnn under each cuDNN convolution setting, the layout cuDNN sees
(TANDEM_CUDNN_LAYOUT=nhwc|nchw) and whether nondeterministic algorithms may be chosen
(TANDEM_CUDNN_DETERMINISTIC=1|0). --graphs: every bench_gpu.py case with --cuda-graphs off and on.
--fuse: the cnn with a Conv2D layer's bias, ReLU and their gradients as separate kernels
(TANDEM_CUDA_FUSE=0) and fused into the layout transposes (1, the default).
Rounds are interleaved; samples/s are medians over rounds.

  python3 benchmarks/gpu/conv_variants.py [--graphs | --fuse] --tandem BIN --data DIR [--rounds 2] [--out FILE.json]
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_gpu  # noqa: E402

VARIANTS = [("nhwc", "1"), ("nchw", "1"), ("nhwc", "0"), ("nchw", "0")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tandem", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples", type=int, default=25600)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="")
    ap.add_argument("--graphs", action="store_true", help="compare --cuda-graphs off and on instead")
    ap.add_argument("--fuse", action="store_true", help="compare TANDEM_CUDA_FUSE=0 and 1 instead")
    a = ap.parse_args()
    cases = bench_gpu.CASES if a.graphs else [("cnn", 256), ("cnn", 100)]
    variants = VARIANTS
    if a.graphs:
        variants = [("graphs", "off"), ("graphs", "on")]
    elif a.fuse:
        variants = [("fuse", "0"), ("fuse", "1")]
    runs = {}
    for _ in range(a.rounds):
        for model, batch in cases:
            for first, second in variants:
                extra = []
                if a.graphs:
                    extra = ["--cuda-graphs", second]
                    key = f"{model} b{batch} cuda-graphs={second}"
                elif a.fuse:
                    os.environ["TANDEM_CUDA_FUSE"] = second
                    key = f"{model} b{batch} fuse={second}"
                else:
                    os.environ["TANDEM_CUDNN_LAYOUT"] = first
                    os.environ["TANDEM_CUDNN_DETERMINISTIC"] = second
                    key = f"{model} b{batch} {first} deterministic={second}"
                try:
                    r = bench_gpu.tandem_case(a.tandem, a.data, model, batch, a.samples, a.epochs, "fp32", 120,
                                              extra)
                    runs.setdefault(key, []).append(r["samples_per_second"])
                except Exception as e:  # noqa: BLE001
                    runs.setdefault(key, []).append(None)
                    print(f"{key}: {e}", file=sys.stderr)
    what = "cnn samples/s by cuDNN setting"
    if a.graphs:
        what = "samples/s with CUDA graphs off and on"
    elif a.fuse:
        what = "cnn samples/s with conv bias/ReLU separate (fuse=0) and fused (fuse=1)"
    lines = [what
             + " (median of rounds; fp32)"]
    for key, vals in runs.items():
        ok = [v for v in vals if v]
        med = statistics.median(ok) if ok else None
        lines.append(f"{key:<36} {med:>10,.0f}  ({', '.join(f'{v:,.0f}' if v else 'FAIL' for v in vals)})"
                     if med else f"{key:<36} FAIL")
    print("\n".join(lines))
    if a.out:
        json.dump({"runs": runs, "table": lines}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
