"""Small Fashion-MNIST-shaped IDX data sets for the script tests (CLI, MPI, checkpoints)."""
import gzip
import os
import random
import struct


def idx_bytes(dims, payload, type_byte=0x08):
    return bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


def make_dataset(root, n_train, n_test, label_max=9, learnable=True, mutate=None, seed=7):
    """Writes {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz into root. With `learnable`, each
    image shows its label as a bright horizontal band over noise, so models can learn it.
    `mutate(files)` may alter the raw file bytes (a dict name -> bytes) before they are written."""
    os.makedirs(root, exist_ok=True)
    rng = random.Random(seed)
    files = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = [rng.randint(0, label_max) for _ in range(n)]
        images = bytearray(rng.getrandbits(6 if learnable else 8) for _ in range(n * 784))
        if learnable:
            for i, label in enumerate(labels):
                row = (2 + 2 * label) % 28
                images[i * 784 + row * 28:i * 784 + row * 28 + 28] = b"\xc8" * 28
        files[f"{split}-images-idx3-ubyte"] = idx_bytes([n, 28, 28], bytes(images))
        files[f"{split}-labels-idx1-ubyte"] = idx_bytes([n], bytes(labels))
    if mutate:
        mutate(files)
    for name, data in files.items():
        with gzip.open(os.path.join(root, name + ".gz"), "wb") as f:
            f.write(data)
    return root


def tree_bytes(root):
    """Every file under root as {relative path: bytes}: to check that a directory is unchanged."""
    return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(root) for f in files}
