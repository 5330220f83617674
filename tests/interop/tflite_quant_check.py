#!/usr/bin/env python3
"""`tandem export --format tflite --quantize none|float16|dynamic|int8` in LiteRT and tf.lite, against
the float model and against TensorFlow's own converter.

For the mlp (one epoch on the 60,000 training images), the cnn (one epoch on the first 10,000) and
tests/interop/bn_after_relu.json (one epoch on 2,000; a BatchNormalization that cannot be folded, so
int8 MUL, ADD and a lone RELU): exports every mode (and int8 with --int8-io), calibrated on the first
CALIBRATION training images; builds the same Keras model with Tandem's weights (read from the TF.js
export's manifest and shards) and converts it with tf.lite.TFLiteConverter in each mode, calibrated on
the same images. Each file runs in LiteRT and in tf.lite.Interpreter (each runtime in a subprocess of
its own) at batch 37 over the 10,000 test images and at batch 1 over the first BATCH1 of them
(TANDEM_BATCH1_IMAGES, default 10,000; in TANDEM_BATCH1_ROUNDS rounds, default 3), 2 threads. Checks:
  * the float model in LiteRT equals `tandem predict` (<= 1e-5), and Keras with the loaded weights does;
  * test accuracy within 0.5 points of the float model for float16 and dynamic, 1 point for int8;
    float16's probabilities within 1e-3 of the float model's;
  * batch 1 agrees with batch 37 and tf.lite with LiteRT (same predicted class for >= 99.9% of images);
  * Tandem's accuracy within 0.3 points of the TF converter's in every mode, and its file size within 10%;
  * the tensor types and I/O each mode promises (int8 weights, FLOAT16 constants, int8 I/O with --int8-io),
    and `tandem inspect --json` listing the quantization parameters.
Batch-1 latency (ms per image) is measured in ROUNDS rounds with the files interleaved, and reported as
the median with the spread; `--report FILE.json` writes every figure (benchmarks/tflite_quant.py).

Usage: tflite_quant_check.py PATH/TO/tandem [--report FILE.json]. Exits 0, 1 (fail) or 77 (skipped: LiteRT,
TensorFlow or Fashion-MNIST missing)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
HERE = os.path.dirname(os.path.abspath(__file__))
THREADS = 2
BATCH = 37
BATCH1 = int(os.environ.get("TANDEM_BATCH1_IMAGES", "10000"))
ROUNDS = int(os.environ.get("TANDEM_BATCH1_ROUNDS", "3"))
CALIBRATION = 500
MODES = ("none", "float16", "dynamic", "int8")
TOLERANCE = {"float16": 0.005, "dynamic": 0.005, "int8": 0.01, "int8-io": 0.01}
MODELS = (("mlp", "mlp", 60000), ("cnn", "cnn", 10000), ("bn_after_relu", os.path.join(HERE, "bn_after_relu.json"), 2000))


# ---- workers ---------------------------------------------------------------------------------------------

def worker_run(kind, x_path, n1, out_path, files):
    """Every file in one runtime: probabilities at batch 37 and batch 1, batch-1 seconds per image per
    round (files interleaved), and what the interpreter says of the tensors."""
    import numpy as np
    if kind == "litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    x = np.load(x_path)
    runners, info, out = {}, {}, {}
    for path in files:
        interp = Interpreter(model_content=open(path, "rb").read(), num_threads=THREADS)
        inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
        types = {}
        for t in interp.get_tensor_details():
            types[t["dtype"].__name__] = types.get(t["dtype"].__name__, 0) + 1
        info[path] = {"input_dtype": inp["dtype"].__name__, "output_dtype": outp["dtype"].__name__,
                      "input_quantization": list(inp["quantization"]), "tensor_dtypes": types,
                      "input_signature": inp["shape_signature"].tolist()}
        size = [None]

        def run(xb, interp=interp, inp=inp, outp=outp, size=size):
            if size[0] != len(xb):
                interp.resize_tensor_input(inp["index"], [len(xb)] + list(xb.shape[1:]), strict=True)
                interp.allocate_tensors()
                size[0] = len(xb)
            if inp["dtype"] == np.int8:  # --int8-io: the caller quantizes, as an integer-only app would
                s, z = inp["quantization"]
                xb = np.clip(np.round(xb / s) + z, -128, 127).astype(np.int8)
            interp.set_tensor(inp["index"], xb)
            interp.invoke()
            y = interp.get_tensor(outp["index"])
            if outp["dtype"] == np.int8:
                s, z = outp["quantization"]
                y = (y.astype(np.float32) - z) * np.float32(s)
            return y.copy()

        runners[path] = run
        out[path + ":b37"] = np.concatenate([run(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])
    rounds = max(1, min(ROUNDS, n1))
    bounds = [r * n1 // rounds for r in range(rounds + 1)]  # every one of the n1 images, once
    b1 = {p: [] for p in files}
    for path in files:  # warm-up at batch 1
        for i in range(20):
            runners[path](x[i:i + 1])
    for r in range(rounds):
        for path in files:
            lo, hi = bounds[r], bounds[r + 1]
            t0 = time.perf_counter()
            b1[path].append(np.concatenate([runners[path](x[i:i + 1]) for i in range(lo, hi)]))
            info[path].setdefault("seconds_per_image", []).append((time.perf_counter() - t0) / (hi - lo))
    for path in files:
        out[path + ":b1"] = np.concatenate(b1[path])
    np.savez(out_path, **{k.replace("/", "|"): v for k, v in out.items()})
    with open(out_path + ".json", "w") as f:
        json.dump(info, f)
    return 0


def keras_model(spec, tfjs_dir):
    """The Keras Sequential of a Tandem spec, with the weights of Tandem's TF.js export."""
    import numpy as np
    import tensorflow as tf
    keras = tf.keras
    manifest = json.load(open(os.path.join(tfjs_dir, "model.json")))["weightsManifest"][0]
    blob = b"".join(open(os.path.join(tfjs_dir, p), "rb").read() for p in manifest["paths"])
    arrays, offset = [], 0
    for w in manifest["weights"]:
        n = int(np.prod(w["shape"]))
        arrays.append(np.frombuffer(blob, dtype="<f4", count=n, offset=offset).reshape(w["shape"]))
        offset += 4 * n
    layers = []
    for c in spec["layers"]:
        t, name = c["type"], c["name"]
        if t == "Dense":
            layers.append(keras.layers.Dense(c["units"], activation=c["activation"], use_bias=c.get("use_bias", True),
                                             name=name))
        elif t == "Conv2D":
            layers.append(keras.layers.Conv2D(c["filters"], tuple(c["kernel_size"]), strides=tuple(c["strides"]),
                                              padding=c["padding"], activation=c["activation"],
                                              use_bias=c.get("use_bias", True), name=name))
        elif t == "MaxPool2D":
            layers.append(keras.layers.MaxPooling2D(tuple(c["pool_size"]), strides=tuple(c["strides"]),
                                                    padding=c["padding"], name=name))
        elif t == "Flatten":
            layers.append(keras.layers.Flatten(name=name))
        elif t == "Dropout":
            layers.append(keras.layers.Dropout(c["rate"], name=name))
        elif t == "BatchNormalization":
            layers.append(keras.layers.BatchNormalization(momentum=c["momentum"], epsilon=c["epsilon"], name=name))
        elif t == "ReLU":
            layers.append(keras.layers.ReLU(name=name))
        elif t in ("Softmax", "Activation"):
            layers.append(keras.layers.Activation(c.get("activation", "softmax"), name=name))
        else:
            raise ValueError("no Keras mapping for " + t)
    model = keras.Sequential([keras.Input(shape=tuple(spec["input_shape"]))] + layers)
    i = 0
    for layer in model.layers:
        n = len(layer.weights)
        if n:
            layer.set_weights(arrays[i:i + n])
            i += n
    if i != len(arrays):
        raise ValueError(f"{len(arrays)} weights in the TF.js manifest, {i} in the Keras model")
    return model


def worker_convert(spec_path, tfjs_dir, calib_path, x_path, out_dir):
    """TF's converter on the same model: one .tflite per mode, and Keras's own float predictions."""
    import numpy as np
    import tensorflow as tf
    model = keras_model(json.load(open(spec_path))["spec"], tfjs_dir)
    calib = np.load(calib_path)
    np.save(os.path.join(out_dir, "keras.npy"), model.predict(np.load(x_path)[:500], verbose=0))

    def representative():
        for i in range(len(calib)):
            yield [calib[i:i + 1]]

    for mode in MODES:
        c = tf.lite.TFLiteConverter.from_keras_model(model)
        if mode != "none":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            c.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            c.representative_dataset = representative
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with open(os.path.join(out_dir, mode + ".tflite"), "wb") as f:
            f.write(c.convert())
    return 0


# ---- the check -------------------------------------------------------------------------------------------

def spread(values):
    import numpy as np
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def main(argv):
    import numpy as np
    from interop_common import (DATA, failures, fail, images, run, skip_reason, small_training_data, test_images,
                                test_labels, train_and_predict)

    report_path = None
    if len(argv) == 3 and argv[1] == "--report":
        report_path = argv[2]
    elif len(argv) != 1:
        sys.exit("usage: tflite_quant_check.py PATH/TO/tandem [--report FILE.json]")
    tandem = os.path.abspath(argv[0])
    skip = skip_reason([m for m in ("ai_edge_litert", "tensorflow") if importlib.util.find_spec(m) is None])
    if skip:
        print("SKIP: " + skip)
        return 77

    started = time.time()
    tmp = tempfile.mkdtemp(prefix="tandem-tflite-quant-check-")
    report = {"threads": THREADS, "batch1_images": BATCH1, "rounds": ROUNDS, "calibration_images": CALIBRATION,
              "models": {}}
    try:
        x = test_images()
        y = test_labels()
        x_path, calib_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "calib.npy")
        np.save(x_path, x)
        np.save(calib_path, images("train-images-idx3-ubyte", CALIBRATION))
        for tag, model, train_count in MODELS:
            failed_before = len(failures)
            src, ref = train_and_predict(tandem, model, small_training_data(tmp, train_count),
                                         os.path.join(tmp, "train-" + tag), len(x))
            if src is None:
                continue

            # Tandem's files: one version per mode, and the TF.js export for Keras's weights.
            served = os.path.join(tmp, "served", tag)
            files = {}
            for v, mode in enumerate(MODES + ("int8-io",), start=1):
                args = [tandem, "export", src, "--to", served, "--version", str(v), "--format", "tflite",
                        "--quantize", "int8" if mode == "int8-io" else mode]
                if mode.startswith("int8"):
                    args += ["--calibration-samples", str(CALIBRATION), "--data", DATA]
                if mode == "int8-io":
                    args.append("--int8-io")
                if run(args).returncode == 0:
                    files[("tandem", mode)] = os.path.join(served, str(v), "model.tflite")
            run([tandem, "export", src, "--to", served, "--version", "9", "--format", "tfjs"])
            for mode in ("int8", "int8-io"):
                p = run([tandem, "inspect", os.path.dirname(files.get(("tandem", mode), src)), "--json"])
                if p.returncode == 0:
                    d = json.loads(p.stdout)["export"].get("tflite", {})
                    q = d.get("quantized_tensors", [])
                    if not q or not any(len(t["scale"]) > 1 for t in q) or d.get("op_versions", {}).get("CONV_2D", 3) != 3:
                        fail(f"{tag} {mode}: tandem inspect shows no per-channel quantization or wrong versions: {d}")

            conv = os.path.join(tmp, "tf-" + tag)
            os.makedirs(conv)
            p = subprocess.run([sys.executable, os.path.abspath(__file__), "--convert", os.path.join(src, "model.json"),
                                os.path.join(served, "9", "tfjs"), calib_path, x_path, conv],
                               capture_output=True, text=True)
            if p.returncode != 0:
                fail(f"{tag}: TF's converter failed\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
            else:
                keras_diff = float(np.max(np.abs(np.load(os.path.join(conv, "keras.npy")) - ref[:500])))
                if keras_diff > 1e-4:
                    fail(f"{tag}: Keras with Tandem's weights differs from tandem predict by {keras_diff:.2e}")
                for mode in MODES:
                    files[("tf", mode)] = os.path.join(conv, mode + ".tflite")

            results = {}
            for kind in ("litert", "tf.lite"):
                res = os.path.join(tmp, f"{tag}-{kind}.npz")
                paths = list(files.values())
                p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind, x_path, str(BATCH1),
                                    res] + paths, capture_output=True, text=True)
                if p.returncode != 0:
                    fail(f"{tag} in {kind}: the runtime exited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
                    continue
                got = np.load(res)
                info = json.load(open(res + ".json"))
                for key, path in files.items():
                    results[(kind,) + key] = (got[path.replace("/", "|") + ":b37"], got[path.replace("/", "|") + ":b1"],
                                              info[path])
            if not results:
                continue

            rows = {}
            for (kind, who, mode), (b37, b1, info) in sorted(results.items()):
                name = f"{tag} {who} {mode} in {kind}"
                acc = float(np.mean(np.argmax(b37, 1) == y))
                row = {"accuracy": acc, "bytes": os.path.getsize(files[(who, mode)]),
                       "ms_per_image_batch1": spread([1e3 * s for s in info["seconds_per_image"]]),
                       "input_dtype": info["input_dtype"], "output_dtype": info["output_dtype"],
                       "tensor_dtypes": info["tensor_dtypes"]}
                agree_b1 = float(np.mean(np.argmax(b1, 1) == np.argmax(b37[:len(b1)], 1)))
                if agree_b1 < 0.999:
                    fail(f"{name}: batch 1 and batch 37 predict the same class for only {agree_b1:.4f}")
                float_b37 = results.get((kind, who, "none"), (None,))[0]
                if mode == "none" and who == "tandem":
                    diff = float(np.max(np.abs(b37 - ref)))
                    row["max_abs_diff_vs_predict"] = diff
                    if diff > 1e-5:
                        fail(f"{name}: differs from tandem predict by {diff:.2e}")
                if mode != "none" and float_b37 is not None:
                    float_acc = float(np.mean(np.argmax(float_b37, 1) == y))
                    row["accuracy_change_vs_float"] = acc - float_acc
                    row["max_abs_diff_vs_float"] = float(np.max(np.abs(b37 - float_b37)))
                    if abs(acc - float_acc) > TOLERANCE[mode]:
                        fail(f"{name}: accuracy {acc:.4f}, float {float_acc:.4f}: more than "
                             f"{100 * TOLERANCE[mode]:.1f} points apart")
                    if mode == "float16" and row["max_abs_diff_vs_float"] > 1e-3:
                        fail(f"{name}: probabilities {row['max_abs_diff_vs_float']:.2e} from the float model's")
                if kind == "tf.lite":
                    lite = results.get(("litert", who, mode))
                    if lite is not None:
                        agree = float(np.mean(np.argmax(lite[0], 1) == np.argmax(b37, 1)))
                        if agree < 0.999:
                            fail(f"{name}: LiteRT and tf.lite agree on only {agree:.4f} of the classes")
                # What each mode promises, as the runtime sees the tensors.
                types = info["tensor_dtypes"]
                want_io = ("int8", "int8") if mode == "int8-io" else ("float32", "float32")
                if (info["input_dtype"], info["output_dtype"]) != want_io:
                    fail(f"{name}: input/output {info['input_dtype']}/{info['output_dtype']}, expected {want_io}")
                if mode == "float16" and not types.get("float16"):
                    fail(f"{name}: no float16 tensors: {types}")
                if mode in ("dynamic", "int8", "int8-io") and not types.get("int8"):
                    fail(f"{name}: no int8 tensors: {types}")
                if who == "tandem" and info["input_signature"][0] != -1:
                    fail(f"{name}: the batch dimension is not free: {info['input_signature']}")
                rows[f"{who} {mode} in {kind}"] = row

            for mode in MODES:  # Tandem against TF's converter, in LiteRT
                ours, theirs = rows.get(f"tandem {mode} in litert"), rows.get(f"tf {mode} in litert")
                if not ours or not theirs:
                    fail(f"{tag} {mode}: missing a LiteRT result for Tandem or TF")
                    continue
                if abs(ours["accuracy"] - theirs["accuracy"]) > 0.003:
                    fail(f"{tag} {mode}: accuracy {ours['accuracy']:.4f}, TF's converter {theirs['accuracy']:.4f}")
                ratio = ours["bytes"] / theirs["bytes"]
                ours["bytes_vs_tf"] = ratio
                if abs(ratio - 1) > 0.10:
                    fail(f"{tag} {mode}: {ours['bytes']} bytes, TF's converter {theirs['bytes']} ({ratio:.3f}x)")
            report["models"][tag] = rows
            if len(failures) == failed_before:
                print(f"{tag}: every mode within its tolerance, and level with TF's converter")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'model':14} {'who':7} {'mode':8} {'runtime':8} {'bytes':>9} {'accuracy':>8} {'Δ float':>8} "
          f"{'ms/img b1 (min-max)':>22}")
    for tag, rows in report["models"].items():
        for key, r in rows.items():
            who, mode, _, kind = key.split(" ")
            t = r["ms_per_image_batch1"]
            print(f"{tag:14} {who:7} {mode:8} {kind:8} {r['bytes']:9d} {r['accuracy']:8.4f} "
                  f"{100 * r.get('accuracy_change_vs_float', 0):+8.2f} "
                  f"{t['median']:8.3f} ({t['min']:.3f}-{t['max']:.3f})")
    print(f"total {time.time() - started:.0f} s")
    if report_path:
        with open(report_path, "w") as f:
            json.dump(report, f, indent=1)
    expected = len(MODELS) * 2 * (len(MODES) + 1 + len(MODES))
    checked = sum(len(r) for r in report["models"].values())
    if checked != expected:
        fail(f"only {checked} of {expected} file/runtime pairs were checked")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("OK: every quantization mode loads and runs in LiteRT and tf.lite within its accuracy budget, level "
          "with TF's converter")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker_run(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6:]))
    if len(sys.argv) > 1 and sys.argv[1] == "--convert":
        sys.exit(worker_convert(*sys.argv[2:7]))
    sys.exit(main(sys.argv[1:]))
