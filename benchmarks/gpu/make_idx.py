#!/usr/bin/env python3
"""Writes a synthetic, learnable dataset in Fashion-MNIST's IDX layout (for GPU machines without
the dataset and without network access):

  python3 benchmarks/gpu/make_idx.py OUT_DIR [--train 60000] [--test 10000] [--seed 1]

Each 28x28 image is dim noise (0..127) with two bright rows whose position encodes the class
(rows 4 + 2*label, 5 + 2*label), so a model can learn it to high accuracy; accuracy figures on it
say that training works, not how well a model does on Fashion-MNIST. Pure Python (no numpy).
"""
import argparse
import gzip
import os
import random
import struct


def write(out_dir, prefix, count, rnd):
    halve = bytes(b >> 1 for b in range(256))
    images = bytearray(struct.pack(">IIII", 0x803, count, 28, 28))
    labels = bytearray(struct.pack(">II", 0x801, count))
    for _ in range(count):
        label = rnd.randrange(10)
        img = bytearray(rnd.randbytes(784).translate(halve))
        row = 4 + 2 * label
        img[row * 28:(row + 2) * 28] = b"\xff" * 56
        images += img
        labels.append(label)
    for name, data in ((f"{prefix}-images-idx3-ubyte.gz", images), (f"{prefix}-labels-idx1-ubyte.gz", labels)):
        with gzip.open(os.path.join(out_dir, name), "wb", compresslevel=1) as f:
            f.write(bytes(data))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--train", type=int, default=60000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    rnd = random.Random(a.seed)
    write(a.out_dir, "train", a.train, rnd)
    write(a.out_dir, "t10k", a.test, rnd)


if __name__ == "__main__":
    main()
