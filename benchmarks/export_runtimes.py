#!/usr/bin/env python3
"""Every export in every runtime that loads it: max |diff| against `tandem predict` and argmax agreement
on the 10,000 Fashion-MNIST test images (batch 37 and batch 1), and the time per image at batch 1, next
to Tandem's own forward pass at batch 1 (build/benchmarks/infer_bench, median per pass).

The runtime numbers come from tests/interop/tflite_tfjs_check.py --report (one process per runtime, 2
threads each, each image one Python call: set_tensor/invoke/get_tensor for LiteRT and tf.lite, a traced
tf.function of the tf_keras model that tensorflowjs loads, an OpenVINO infer request; 20 warm-up calls).
Tandem's is the C++ forward pass alone (what `tandem serve` runs per request), 2 threads. Prints the
Markdown table of benchmarks/RESULTS.md.

Usage: export_runtimes.py [--tandem build/tandem] [--bench build/benchmarks/infer_bench]"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"mlp": "mlp", "cnn": "cnn", "cnn_bn": os.path.join(ROOT, "tests/interop/cnn_bn.json")}


def tandem_batch1_ms(tandem, bench, work, threads):
    """Tandem's median forward pass at batch 1 (ms) per model; the weights do not change the cost."""
    out = {}
    for tag, model in MODELS.items():
        subprocess.run([tandem, "train", "--model", model, "--epochs", "1", "--train-samples", "2000",
                        "--validation-size", "0", "--output", os.path.join(work, tag)], check=True,
                       capture_output=True)
        vdir = os.path.join(work, tag, "model", "1")
        r = json.loads(subprocess.run([bench, vdir, "1", "3000", str(threads)], check=True, capture_output=True,
                                      text=True).stdout)
        out[tag] = r["median_us"] / 1e3
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", default=os.path.join(ROOT, "build/tandem"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "build/benchmarks/infer_bench"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tandem-export-runtimes-")
    try:
        report_path = os.path.join(work, "report.json")
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tests/interop/tflite_tfjs_check.py"), a.tandem,
                            "--report", report_path], capture_output=True, text=True)
        print(p.stdout[-6000:])
        if p.returncode != 0 or not os.path.exists(report_path):
            sys.exit(f"tflite_tfjs_check.py exited {p.returncode}:\n{p.stderr[-3000:]}")
        report = json.load(open(report_path))
        own = tandem_batch1_ms(a.tandem, a.bench, work, report["threads"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{report['threads']} threads; batch 37 over all 10,000 test images, batch 1 over the first "
          f"{report['batch1_images']:,}\n")
    print("| model | format | runtime | max abs diff (b37 / b1) | argmax agreement | ms / image at batch 1 | "
          "Tandem ms / image |")
    print("|---|---|---|---|---|---|---|")
    for tag, rows in report["models"].items():
        for r in rows.values():
            agree = min(r["batch37"]["argmax_agreement"], r["batch1"]["argmax_agreement"])
            print(f"| {tag} | {r['format']} | {r['runtime']} | {r['batch37']['max_abs_diff']:.1e} / "
                  f"{r['batch1']['max_abs_diff']:.1e} | {agree:.4f} | {1e3 * r['seconds_per_image_batch1']:.3f} | "
                  f"{own[tag]:.3f} |")


if __name__ == "__main__":
    main()
