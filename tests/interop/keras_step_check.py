#!/usr/bin/env python3
"""One SGD step of each preset in Tandem and in Keras/TensorFlow, from the same initial weights on
the same batch: the losses and every updated weight must agree (relative error <= 1e-4, measured
per tensor as max|a-b| / max(max|b|, 1e-3)), and so must the updates themselves (<= 1e-3 of the
largest update, floor 1e-6); where Keras's update is zero (below 1e-3 of the largest update of any
weight), Tandem's must be zero too. Tandem's weights are loaded into Keras with no transposes: this also checks the layouts
(NHWC, HWIO, Dense [in, out], Flatten in H,W,C order). Exits 77 (skipped) without TensorFlow."""
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
try:
    import numpy as np
    import tensorflow as tf
    import keras
except ImportError as e:  # pragma: no cover
    print(f"SKIP: TensorFlow is not installed ({e}); .ci/run installs tensorflow-cpu")
    sys.exit(77)

STEP_DUMP = sys.argv[1]
DATA = "/usr/share/datasets/fashion-mnist"
WEIGHT_TOL, UPDATE_TOL = 1e-4, 1e-3


def keras_layer(cfg):
    t = cfg["type"]
    name = cfg["name"]
    if t == "Dense":
        return keras.layers.Dense(cfg["units"], activation=cfg["activation"], name=name)
    if t == "Conv2D":
        return keras.layers.Conv2D(cfg["filters"], tuple(cfg["kernel_size"]), strides=tuple(cfg["strides"]),
                                   padding=cfg["padding"], activation=cfg["activation"], name=name)
    if t == "MaxPool2D":
        return keras.layers.MaxPooling2D(tuple(cfg["pool_size"]), strides=tuple(cfg["strides"]),
                                         padding=cfg["padding"], name=name)
    if t == "Flatten":
        return keras.layers.Flatten(name=name)
    if t == "Dropout":
        return keras.layers.Dropout(cfg["rate"], name=name)
    if t == "BatchNormalization":
        return keras.layers.BatchNormalization(momentum=cfg["momentum"], epsilon=cfg["epsilon"], name=name)
    if t == "ReLU":
        return keras.layers.ReLU(name=name)
    raise ValueError("no Keras mapping for " + t)


def rel(a, b, floor):
    # Relative to the tensor's largest magnitude, with an absolute floor: a bias followed by
    # BatchNormalization has a true gradient of exactly zero, and both sides only see rounding.
    return float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), floor)


def check(model_name):
    out = tempfile.mkdtemp(prefix="tandem-keras-")
    cmd = [STEP_DUMP, "--model", model_name, "--out", out, "--batch", "32", "--lr", "0.1"]
    if os.path.isdir(DATA):
        cmd += ["--data", DATA]
    subprocess.run(cmd, check=True)
    result = json.load(open(os.path.join(out, "result.json")))
    spec = result["spec"]
    x = np.load(os.path.join(out, "x.npy"))
    y = np.load(os.path.join(out, "y.npy"))

    model = keras.Sequential([keras.Input(shape=tuple(spec["input_shape"]))] +
                             [keras_layer(c) for c in spec["layers"]])
    names = []
    for layer in model.layers:
        ws = []
        for w in layer.weights:
            key = f"{layer.name}.{w.name.split('/')[-1].split(':')[0]}"
            ws.append(np.load(os.path.join(out, "before", key + ".npy")))
            names.append(key)
        if ws:
            layer.set_weights(ws)
    opt = keras.optimizers.SGD(learning_rate=result["lr"])
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))

    # The largest update Keras made to any weight: updates below 1e-3 of it are "zero" (a bias
    # followed by BatchNormalization has an exactly zero gradient; both sides then see only
    # rounding noise), and there we require Tandem's update to be zero in the same sense.
    starts = {}
    max_update = 0.0
    for layer in model.layers:
        for w in layer.weights:
            key = f"{layer.name}.{w.name.split('/')[-1].split(':')[0]}"
            starts[key] = np.load(os.path.join(out, "before", key + ".npy"))
            max_update = max(max_update, float(np.max(np.abs(w.numpy() - starts[key]))))
    zero_update = 1e-3 * max_update

    failures = []
    loss_rel = abs(float(loss) - result["loss"]) / abs(float(loss))
    print(f"{model_name}: loss keras {float(loss):.7f} tandem {result['loss']:.7f} rel {loss_rel:.2e}")
    if loss_rel > WEIGHT_TOL:
        failures.append(f"{model_name}: loss differs by {loss_rel:.2e}")
    i = 0
    for layer in model.layers:
        for w in layer.weights:
            key = names[i]
            i += 1
            ref = w.numpy()
            ours = np.load(os.path.join(out, "after", key + ".npy"))
            start = starts[key]
            if ours.shape != ref.shape:
                failures.append(f"{key}: shape {ours.shape} vs Keras {ref.shape}")
                continue
            if float(np.max(np.abs(ref - start))) < zero_update:
                ours_update = float(np.max(np.abs(ours - start)))
                print(f"  {key:28s} {str(ref.shape):20s} zero gradient: Tandem's update {ours_update:.1e}")
                if ours_update >= zero_update:
                    failures.append(f"{key}: Keras's update is zero but Tandem's is {ours_update:.2e}")
                continue
            r_w = rel(ours, ref, 1e-3)
            r_u = rel(ours - start, ref - start, 1e-6)
            print(f"  {key:28s} {str(ref.shape):20s} weights rel {r_w:.2e}  update rel {r_u:.2e}")
            if r_w > WEIGHT_TOL:
                failures.append(f"{key}: updated weights differ by {r_w:.2e} (> {WEIGHT_TOL})")
            if r_u > UPDATE_TOL:
                failures.append(f"{key}: the update differs by {r_u:.2e} (> {UPDATE_TOL})")
    return failures


def main():
    failures = []
    here = os.path.dirname(os.path.abspath(__file__))
    models = sys.argv[2:] or ["mlp", "cnn", os.path.join(here, "cnn_bn.json")]
    for m in models:
        failures += check(m)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("Tandem and Keras agree on one SGD step of: " + ", ".join(models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
