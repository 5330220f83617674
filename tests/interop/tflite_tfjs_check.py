#!/usr/bin/env python3
"""`tandem export --format tflite,tfjs` (and the SavedModel / ONNX of the same version) against the
runtimes that load them.

For the mlp and cnn presets and tests/interop/cnn_bn.json: trains a model briefly (one epoch on the
first 2,000 Fashion-MNIST training images), exports one version in every format, and predicts the
10,000 test images with
  * model.tflite in LiteRT (ai_edge_litert Interpreter(model_content=bytes)) and in tf.lite.Interpreter:
    batch 37 (resize_tensor_input strict, which only the free batch dimension allows; the last batch of
    10 resized again), batch 1, and through get_signature_runner("serving_default")(input=...);
  * tfjs/ with tensorflowjs' load_keras_model (a tf_keras model: topology and name-matched weights),
    batch 37 and batch 1;
  * OpenVINO reading the SavedModel directory, model.onnx and model.tflite, batch 37 and batch 1.
Each runtime runs in a subprocess of its own (a crash is a failure, not the end of the check). All must
agree with `tandem predict --json` to max |diff| <= 1e-5 per probability, with the same argmax (but
where Tandem's two best probabilities are within 1e-5: a float tie). Batch 1 covers the first
BATCH1_IMAGES images (all 10,000 by default, TANDEM_BATCH1_IMAGES to change). Also: the LiteRT verifier refuses a truncated model.tflite with a
clean error, and `tandem inspect --json` describes both formats.

Usage: tflite_tfjs_check.py PATH/TO/tandem [--report FILE.json]   Exits 0 (pass), 1 (fail) or 77
(skipped: a runtime or Fashion-MNIST is not installed). --report writes every measurement (max |diff|,
argmax agreement, seconds per image at batch 1) for benchmarks/export_runtimes.py."""
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
BATCH1_IMAGES = int(os.environ.get("TANDEM_BATCH1_IMAGES", "10000"))
RUNTIMES = {  # runtime -> the module that must be importable
    "litert": "ai_edge_litert",
    "tf.lite": "tensorflow",
    "tfjs": "tensorflowjs",
    "openvino": "openvino",
}


# ---- workers: one runtime in one process -------------------------------------------------------------

def tfjs_import():
    """tensorflowjs 4.22 imports tensorflow_decision_forests and its JAX converter eagerly; neither is
    installed (tools/setup.sh installs it with --no-deps beside tensorflow-cpu), so both are stubbed."""
    import types
    sys.modules.setdefault("tensorflow_decision_forests", types.ModuleType("tensorflow_decision_forests"))
    jax_conversion = types.ModuleType("tensorflowjs.converters.jax_conversion")
    jax_conversion.convert_jax = lambda *a, **k: None
    sys.modules.setdefault("tensorflowjs.converters.jax_conversion", jax_conversion)
    import tensorflowjs
    return tensorflowjs


def batched(run, x, batch):
    import numpy as np
    return np.concatenate([run(x[i:i + batch]) for i in range(0, len(x), batch)])


def timed_batch1(run, x):
    """Predictions one image at a time, and the seconds per image (after 20 warm-up calls)."""
    import numpy as np
    for i in range(min(20, len(x))):
        run(x[i:i + 1])
    t0 = time.perf_counter()
    out = np.concatenate([run(x[i:i + 1]) for i in range(len(x))])
    return out, (time.perf_counter() - t0) / len(x)


def worker_tflite(kind, version_dir, x, n1, out):
    import numpy as np
    if kind == "litert":
        from ai_edge_litert.interpreter import Interpreter
    else:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    model = open(os.path.join(version_dir, "model.tflite"), "rb").read()
    interp = Interpreter(model_content=model, num_threads=THREADS)  # bytes: the verifier runs
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    info = {"input_shape": inp["shape"].tolist(), "input_signature": inp["shape_signature"].tolist(),
            "input_name": inp["name"], "output_name": outp["name"],
            "output_signature": outp["shape_signature"].tolist()}
    size = [None]

    def run(xb):
        if size[0] != len(xb):
            interp.resize_tensor_input(inp["index"], [len(xb), 28, 28, 1], strict=True)
            interp.allocate_tensors()
            size[0] = len(xb)
        interp.set_tensor(inp["index"], xb)
        interp.invoke()
        return interp.get_tensor(outp["index"]).copy()

    out["batch37"] = batched(run, x, BATCH)
    out["batch1"], info["seconds_per_image"] = timed_batch1(run, x[:n1])
    runner = interp.get_signature_runner("serving_default")
    info["signature_inputs"] = sorted(runner.get_input_details())
    info["signature_outputs"] = sorted(runner.get_output_details())
    out["signature37"] = batched(lambda xb: runner(input=xb)["probabilities"], x, BATCH)
    out["signature1"] = np.concatenate([runner(input=x[i:i + 1])["probabilities"] for i in range(min(n1, 500))])
    # A truncated file: the verifier's clean error, no crash.
    try:
        Interpreter(model_content=model[:len(model) // 2])
        info["truncated"] = "loaded"
    except ValueError as e:
        info["truncated"] = str(e)[:200]
    return info


def worker_tfjs(version_dir, x, n1, out):
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tfjs = tfjs_import()
    m = tfjs.converters.load_keras_model(os.path.join(version_dir, "tfjs", "model.json"))
    info = {"layers": [[type(l).__name__, l.name] for l in m.layers]}
    out["batch37"] = m.predict(x, batch_size=BATCH, verbose=0)
    # One traced graph for single images: eager calls would time tf_keras' Python overhead.
    one = tf.function(lambda xb: m(xb, training=False),
                      input_signature=[tf.TensorSpec([1, 28, 28, 1], tf.float32)])
    out["batch1"], info["seconds_per_image"] = timed_batch1(lambda xb: one(xb).numpy(), x[:n1])
    return info


def worker_openvino(path, x, n1, out):
    import openvino as ov
    core = ov.Core()
    model = core.read_model(path)
    info = {"input_shape": str(model.input(0).get_partial_shape())}
    # f32: on CPUs with bf16 units OpenVINO otherwise infers in bf16 (errors of 1e-2 here).
    cm = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": "f32"})
    request = cm.create_infer_request()
    run = lambda xb: request.infer({0: xb})[cm.output(0)].copy()
    out["batch37"] = batched(run, x, BATCH)
    out["batch1"], info["seconds_per_image"] = timed_batch1(run, x[:n1])
    return info


def worker_main(argv):
    import numpy as np
    kind, path, x_path, n1, out_path = argv[0], argv[1], argv[2], int(argv[3]), argv[4]
    x = np.load(x_path)
    out = {}
    if kind in ("litert", "tf.lite"):
        info = worker_tflite(kind, path, x, n1, out)
    elif kind == "tfjs":
        info = worker_tfjs(path, x, n1, out)
    else:
        info = worker_openvino(path, x, n1, out)
    np.savez(out_path, **out)
    with open(out_path + ".json", "w") as f:
        json.dump(info, f)
    return 0


# ---- the check -------------------------------------------------------------------------------------------

def main(argv):
    import numpy as np
    from interop_common import (compare, fail, failures, run, skip_reason, small_training_data, test_images,
                                train_and_predict)

    report_path = None
    if len(argv) == 3 and argv[1] == "--report":
        report_path = argv[2]
    elif len(argv) != 1:
        sys.exit("usage: tflite_tfjs_check.py PATH/TO/tandem [--report FILE.json]")
    tandem = os.path.abspath(argv[0])
    skip = skip_reason([f"{r} ({m})" for r, m in RUNTIMES.items() if importlib.util.find_spec(m) is None])
    if skip:
        print("SKIP: " + skip)
        return 77

    started = time.time()
    tmp = tempfile.mkdtemp(prefix="tandem-tflite-tfjs-check-")
    rows, report = [], {"threads": THREADS, "batch1_images": BATCH1_IMAGES, "models": {}}
    try:
        small = small_training_data(tmp)
        x = test_images()
        x_path = os.path.join(tmp, "x.npy")
        np.save(x_path, x)
        models = ("mlp", "cnn", os.path.join(HERE, "cnn_bn.json"))
        for model in models:
            tag = os.path.splitext(os.path.basename(model))[0]
            failed_before = len(failures)
            src, ref = train_and_predict(tandem, model, small, os.path.join(tmp, "train-" + tag), len(x))
            if src is None:
                continue
            vdir = os.path.join(tmp, "serving", tag, "1")
            run([tandem, "export", src, "--to", os.path.dirname(vdir), "--format", "all"])
            want = ["model.json", "model.onnx", "model.tflite", "saved_model.pb", "tfjs", "weights.tdw"]
            if not os.path.isdir(vdir) or sorted(os.listdir(vdir)) != want:
                fail(f"{tag}: {vdir} holds {sorted(os.listdir(vdir)) if os.path.isdir(vdir) else 'nothing'}")
                continue
            p = run([tandem, "inspect", vdir, "--json"])
            if p.returncode == 0:
                ex = json.loads(p.stdout)["export"]
                if ex["formats"] != ["native", "savedmodel", "onnx", "tflite", "tfjs"]:
                    fail(f"{tag}: tandem inspect lists formats {ex['formats']}")
                if ex["tflite"]["inputs"][0]["shape"] != [-1, 28, 28, 1] or \
                        "serving_default" not in ex["tflite"]["signatures"]:
                    fail(f"{tag}: tandem inspect's tflite description: {ex['tflite']}")
                if sum(s["bytes"] for s in ex["tfjs"]["shards"]) != ex["tfjs"]["weight_bytes"]:
                    fail(f"{tag}: tandem inspect's tfjs description: {ex['tfjs']}")
            spec = json.load(open(os.path.join(src, "model.json")))["spec"]
            # A Sequential's layers (without its InputLayer), as Keras names their classes.
            expected_layers = [[{"MaxPool2D": "MaxPooling2D"}.get(l["type"], l["type"]), l["name"]]
                               for l in spec["layers"]]

            cases = [("litert", "model.tflite", vdir, BATCH1_IMAGES), ("tf.lite", "model.tflite", vdir, BATCH1_IMAGES),
                     ("tfjs", "tfjs", vdir, BATCH1_IMAGES),
                     ("openvino", "saved_model", vdir, BATCH1_IMAGES),
                     ("openvino", "model.onnx", os.path.join(vdir, "model.onnx"), BATCH1_IMAGES),
                     ("openvino", "model.tflite", os.path.join(vdir, "model.tflite"), BATCH1_IMAGES)]
            report["models"][tag] = {}
            for kind, fmt, path, n1 in cases:
                name = f"{tag} {fmt} in {kind}"
                res = os.path.join(tmp, f"{tag}-{kind}-{fmt}.npz")
                t0 = time.time()
                p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind, path, x_path, str(n1),
                                    res], capture_output=True, text=True)
                if p.returncode != 0:
                    fail(f"{name}: the runtime exited {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
                    continue
                got = np.load(res)
                info = json.load(open(res + ".json"))
                row = {"runtime": kind, "format": fmt, "seconds": round(time.time() - t0, 1),
                       "seconds_per_image_batch1": info["seconds_per_image"], "batch1_images": n1}
                for key in sorted(got.files):
                    ref_part = ref[:len(got[key])]
                    diff, mismatches = compare(f"{name} ({key})", ref_part, got[key])
                    row[key] = {"images": len(got[key]), "max_abs_diff": diff,
                                "argmax_agreement": float(np.mean(np.argmax(got[key], 1) == np.argmax(ref_part, 1))),
                                "argmax_mismatches": mismatches}
                if kind in ("litert", "tf.lite"):
                    if info["input_shape"] != [1, 28, 28, 1] or info["input_signature"] != [-1, 28, 28, 1]:
                        fail(f"{name}: input shape {info['input_shape']}, signature {info['input_signature']}")
                    if info["input_name"] != "input" or info["output_name"] != "probabilities" or \
                            info["output_signature"] != [-1, 10]:
                        fail(f"{name}: input/output {info}")
                    if info["signature_inputs"] != ["input"] or info["signature_outputs"] != ["probabilities"]:
                        fail(f"{name}: signature serving_default has {info['signature_inputs']} -> "
                             f"{info['signature_outputs']}")
                    if "not a valid Flatbuffer" not in info["truncated"]:
                        fail(f"{name}: a truncated model.tflite gave: {info['truncated']}")
                if kind == "tfjs" and info["layers"] != expected_layers:
                    fail(f"{name}: the Keras model's layers {info['layers']} do not mirror {expected_layers}")
                if kind == "openvino" and not info["input_shape"].startswith("[?,28,28,1"):
                    fail(f"{name}: OpenVINO reads the input as {info['input_shape']}, not a free batch")
                report["models"][tag][f"{fmt} in {kind}"] = row
                rows.append((tag, fmt, kind, row))
            if len(failures) == failed_before:
                print(f"{tag}: all runtimes agree")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'model':7} {'format':13} {'runtime':9} {'b37 max|diff|':>13} {'b1 max|diff|':>12} {'b1 images':>9} "
          f"{'argmax agree':>12} {'ms/image b1':>11} {'s':>6}")
    for tag, fmt, kind, r in rows:
        print(f"{tag:7} {fmt:13} {kind:9} {r['batch37']['max_abs_diff']:13.3e} {r['batch1']['max_abs_diff']:12.3e} "
              f"{r['batch1']['images']:9d} {r['batch37']['argmax_agreement']:12.4f} "
              f"{1e3 * r['seconds_per_image_batch1']:11.3f} {r['seconds']:6.1f}")
    print(f"total {time.time() - started:.0f} s")
    if report_path:
        with open(report_path, "w") as f:
            json.dump(report, f, indent=1)
    if len(rows) != 3 * 6:
        fail(f"only {len(rows)} of {3 * 6} model/runtime pairs were checked")
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("OK: TFLite, TF.js, SavedModel and ONNX exports agree with tandem predict in LiteRT, tf.lite, "
          "tensorflowjs and OpenVINO")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
