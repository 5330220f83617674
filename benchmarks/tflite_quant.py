#!/usr/bin/env python3
"""TFLite post-training quantization, Tandem's exporter next to TensorFlow's converter.

Runs tests/interop/tflite_quant_check.py with --report (which trains mlp, cnn and
tests/interop/bn_after_relu.json one epoch, exports every --quantize mode, converts the same Keras
model with the same calibration images through tf.lite.TFLiteConverter, and times every file in
LiteRT and tf.lite at batch 1 with 2 threads, the files interleaved over --rounds rounds), then prints the
markdown table of benchmarks/RESULTS.md: per model and mode, file size, test accuracy in LiteRT and
LiteRT's time per image at batch 1 (median of the rounds, min-max), Tandem's and TF's side by side.

Usage: benchmarks/tflite_quant.py [--tandem build/tandem] [--images N] [--rounds R] [--report FILE.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK = os.path.join(HERE, "..", "tests", "interop", "tflite_quant_check.py")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tandem", default=os.path.join(HERE, "..", "build", "tandem"))
    ap.add_argument("--images", type=int, default=10000, help="batch-1 images per file (TANDEM_BATCH1_IMAGES)")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (TANDEM_BATCH1_ROUNDS)")
    ap.add_argument("--report", help="keep the check's JSON report here")
    args = ap.parse_args()
    report = args.report or os.path.join(tempfile.mkdtemp(prefix="tandem-tflite-quant-"), "report.json")
    env = dict(os.environ, TANDEM_BATCH1_IMAGES=str(args.images), TANDEM_BATCH1_ROUNDS=str(args.rounds))
    r = subprocess.run([sys.executable, CHECK, args.tandem, "--report", report], env=env)
    if r.returncode != 0 or not os.path.exists(report):
        sys.exit(f"tflite_quant_check.py exited {r.returncode}")
    rep = json.load(open(report))
    print(f"\n{rep['threads']} threads, {rep['batch1_images']} batch-1 images per file in {rep['rounds']} "
          f"interleaved rounds, {rep['calibration_images']} calibration images\n")
    print("| model | mode | bytes Tandem / TF | LiteRT accuracy Tandem / TF (Δ vs float) "
          "| LiteRT ms / image b1, Tandem | TF | Tandem / TF |")
    print("|---|---|---|---|---|---|---|")
    for tag, rows in rep["models"].items():
        for mode in ("none", "float16", "dynamic", "int8", "int8-io"):
            ours = rows.get(f"tandem {mode} in litert")
            theirs = rows.get(f"tf {mode} in litert")  # TF's converter is not asked for int8 I/O
            if not ours:
                continue
            t = ours["ms_per_image_batch1"]
            ms = f"{t['median']:.3f} ({t['min']:.3f}-{t['max']:.3f})"
            acc = f"{ours['accuracy']:.4f}"
            delta = f"({100 * ours.get('accuracy_change_vs_float', 0):+.2f} pt)"
            if theirs:
                u = theirs["ms_per_image_batch1"]
                print(f"| {tag} | {mode} | {ours['bytes']:,} / {theirs['bytes']:,} "
                      f"({ours['bytes'] / theirs['bytes']:.3f}x) | {acc} / {theirs['accuracy']:.4f} {delta} | {ms} | "
                      f"{u['median']:.3f} ({u['min']:.3f}-{u['max']:.3f}) | {t['median'] / u['median']:.2f} |")
            else:
                print(f"| {tag} | {mode} | {ours['bytes']:,} / – | {acc} / – {delta} | {ms} | – | – |")

if __name__ == "__main__":
    main()
