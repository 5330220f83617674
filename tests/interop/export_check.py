#!/usr/bin/env python3
"""`tandem export` against real TensorFlow and onnxruntime.

For the mlp and cnn presets, tests/interop/cnn_bn.json and EDGE_SPEC below: trains a model briefly (one epoch on the
first 2,000 Fashion-MNIST training images), exports it with `tandem export` to a SavedModel and to
ONNX, and predicts the 10,000 test images with tf.saved_model.load(...).signatures["serving_default"]
and with onnxruntime. Both must agree with `tandem predict --json` to max |diff| <= 1e-5 per
probability, with the same argmax (a mismatch is tolerated only where Tandem's two best
probabilities are within 1e-5 of each other, i.e. a float tie). Also: onnx.checker (full check),
`saved_model_cli show --all` and `saved_model_cli run`, every GraphDef node's attributes against
TensorFlow's op registry (all required ones present, none unknown, none equal to its default), and
the CLI's versioning (next free version, refusal to overwrite, --overwrite, no temporary directory left).

Usage: export_check.py PATH/TO/tandem      Exits 0 (pass), 1 (fail) or 77 (skipped: no TensorFlow,
onnxruntime or Fashion-MNIST data)."""
import json
import os
import shutil
import sys
import tempfile

from interop_common import (DATA, compare, fail, failures, idx_file, run, small_training_data, test_images,
                                train_and_predict)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
try:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry
except ImportError as e:  # pragma: no cover
    print(f"SKIP: TensorFlow, onnx or onnxruntime is not installed ({e}); pip install tensorflow-cpu onnx onnxruntime")
    sys.exit(77)

if len(sys.argv) != 2:
    sys.exit("usage: export_check.py PATH/TO/tandem")
TANDEM = os.path.abspath(sys.argv[1])
HERE = os.path.dirname(os.path.abspath(__file__))
# The cases the presets miss: asymmetric "same" padding (TF pads the extra row at the bottom/right),
# strided "same" pooling, convolution without bias, a Softmax layer, Activation and ReLU layers.
EDGE_SPEC = {
    "name": "edge",
    "input_shape": [28, 28, 1],
    "layers": [
        {"type": "Conv2D", "filters": 8, "kernel_size": [4, 3], "padding": "same", "activation": "relu"},
        {"type": "MaxPool2D", "pool_size": 3, "strides": 2, "padding": "same"},
        {"type": "BatchNormalization"},
        {"type": "Conv2D", "filters": 8, "kernel_size": 3, "strides": 2, "padding": "same", "use_bias": False},
        {"type": "Activation", "activation": "relu"},
        {"type": "Dropout", "rate": 0.3},
        {"type": "Flatten"},
        {"type": "Dense", "units": 16, "use_bias": False},
        {"type": "ReLU"},
        {"type": "Dense", "units": 10},
        {"type": "Softmax"},
    ],
}
def check_graph_attrs(pb_path, tag):
    """Every node: required attrs present, no unknown attrs, no attr equal to its default."""
    sm = saved_model_pb2.SavedModel()
    with open(pb_path, "rb") as f:
        sm.ParseFromString(f.read())
    if len(sm.meta_graphs) != 1 or list(sm.meta_graphs[0].meta_info_def.tags) != ["serve"]:
        fail(f"{tag}: expected one MetaGraphDef tagged exactly ['serve']")
    graph = sm.meta_graphs[0].graph_def
    for node in graph.node:
        op_def = op_def_registry.get(node.op)
        if op_def is None:
            fail(f"{tag}: node {node.name}: op {node.op} unknown to TensorFlow {tf.__version__}")
            continue
        known = {a.name: a for a in op_def.attr}
        for name in node.attr:
            if name not in known:
                fail(f"{tag}: node {node.name} ({node.op}) has attr '{name}' unknown to the op")
            elif known[name].HasField("default_value") and known[name].default_value == node.attr[name]:
                fail(f"{tag}: node {node.name} ({node.op}) writes attr '{name}' equal to its default")
        for name, a in known.items():
            if not a.HasField("default_value") and name not in node.attr:
                fail(f"{tag}: node {node.name} ({node.op}) lacks required attr '{name}'")
    return len(graph.node), graph.versions.producer


def main():
    if idx_file("t10k-images-idx3-ubyte") is None or idx_file("train-images-idx3-ubyte") is None:
        print(f"SKIP: Fashion-MNIST not found in {DATA} (set TANDEM_DATA)")
        return 77
    print(f"TensorFlow {tf.__version__}, onnxruntime {ort.__version__}, onnx {onnx.__version__}")
    tmp = tempfile.mkdtemp(prefix="tandem-export-check-")
    try:
        small = small_training_data(tmp)
        x = test_images()
        zeros = os.path.join(tmp, "zeros.npy")
        np.save(zeros, np.zeros((2,) + x.shape[1:], np.float32))
        edge = os.path.join(tmp, "edge.json")
        with open(edge, "w") as f:
            json.dump(EDGE_SPEC, f)
        rows = []
        models = ("mlp", "cnn", os.path.join(HERE, "cnn_bn.json"), edge)
        for model in models:
            tag = os.path.splitext(os.path.basename(model))[0]
            failed_before = len(failures)
            src, ref = train_and_predict(TANDEM, model, small, os.path.join(tmp, "train-" + tag), len(x))
            if src is None:
                continue

            base = os.path.join(tmp, "serving", tag)
            run([TANDEM, "export", src, "--to", base, "--format", "savedmodel"])
            run([TANDEM, "export", src, "--to", base, "--format", "onnx"])
            sm_dir, onnx_dir = os.path.join(base, "1"), os.path.join(base, "2")
            for d, want in ((sm_dir, "saved_model.pb"), (onnx_dir, "model.onnx")):
                have = sorted(os.listdir(d)) if os.path.isdir(d) else []
                if have != sorted(["model.json", "weights.tdw", want]):
                    fail(f"{tag}: {d} holds {have}")
            if any(n.startswith(".") for n in os.listdir(base)):
                fail(f"{tag}: temporary entries left in {base}: {os.listdir(base)}")
            if len(failures) > failed_before:
                continue

            # The exported tree still serves Tandem's own tools, with the same weights.
            few = [run([TANDEM, "predict", d, "--json", "--count", "10", "--data", DATA]) for d in (src, sm_dir)]
            if all(p.returncode == 0 for p in few) and json.loads(few[0].stdout) != json.loads(few[1].stdout):
                fail(f"{tag}: tandem predict on the exported version differs from the source version")

            # TensorFlow: the serving signature, as TF Serving would call it.
            nodes, producer = check_graph_attrs(os.path.join(sm_dir, "saved_model.pb"), tag)
            loaded = tf.saved_model.load(sm_dir)
            fn = loaded.signatures["serving_default"]
            tf_out = np.concatenate([fn(input=tf.constant(x[i:i + 1000]))["probabilities"].numpy()
                                     for i in range(0, len(x), 1000)])
            tf_diff, tf_ties = compare(f"{tag} TensorFlow", ref, tf_out)

            # onnxruntime.
            onnx_path = os.path.join(onnx_dir, "model.onnx")
            onnx.checker.check_model(onnx.load(onnx_path), full_check=True)
            sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            if [i.name for i in sess.get_inputs()] != ["input"] or [o.name for o in sess.get_outputs()] != [
                    "probabilities"]:
                fail(f"{tag}: ONNX inputs/outputs are {sess.get_inputs()} / {sess.get_outputs()}")
            ort_out = sess.run(["probabilities"], {"input": x})[0]
            ort_diff, ort_ties = compare(f"{tag} onnxruntime", ref, ort_out)

            # saved_model_cli, as a user would check a SavedModel before serving it.
            p = run(["saved_model_cli", "show", "--all", "--dir", sm_dir])
            if p.returncode == 0 and ("serving_default" not in p.stdout or "probabilities" not in p.stdout):
                fail(f"{tag}: saved_model_cli show does not list the signature:\n{p.stdout}")
            p = run(["saved_model_cli", "run", "--dir", sm_dir, "--tag_set", "serve", "--signature_def",
                     "serving_default", "--inputs", "input=" + zeros])
            if p.returncode == 0 and "probabilities" not in p.stdout:
                fail(f"{tag}: saved_model_cli run printed no probabilities:\n{p.stdout}")
            rows.append((tag, nodes, producer, tf_diff, tf_ties, ort_diff, ort_ties,
                         float(np.mean(np.argmax(ref, 1) == np.argmax(tf_out, 1)))))

        # Versioning through the CLI.
        src = os.path.join(tmp, "train-mlp", "model", "1")
        base = os.path.join(tmp, "serving", "mlp")
        p = run([TANDEM, "export", src, "--to", base, "--format", "savedmodel", "--version", "1"], expect=2)
        if "--overwrite" not in p.stderr:
            fail(f"refusing to overwrite should suggest --overwrite:\n{p.stderr}")
        p = run([TANDEM, "export", src, "--to", base, "--format", "savedmodel,onnx", "--version", "1", "--overwrite"])
        if sorted(os.listdir(os.path.join(base, "1"))) != ["model.json", "model.onnx", "saved_model.pb",
                                                           "weights.tdw"]:
            fail(f"--overwrite did not replace version 1: {os.listdir(os.path.join(base, '1'))}")
        p = run([TANDEM, "export", src, "--to", base, "--format", "native"])
        if not p.stdout.strip().endswith(os.path.join(base, "3")):
            fail(f"the next free version should be 3: {p.stdout}")
        run([TANDEM, "export", src, "--to", base, "--format", "coreml"], expect=2)
        run([TANDEM, "export", src, "--to", base, "--format", "onnx", "--version", "0"], expect=2)
        run([TANDEM, "export", os.path.join(tmp, "missing"), "--to", base, "--format", "onnx"], expect=2)
        if sorted(os.listdir(base)) != ["1", "2", "3"]:
            fail(f"{base} holds {sorted(os.listdir(base))}, expected versions 1, 2, 3 only")

        print(f"{'model':8} {'nodes':>5} {'producer':>8} {'TF max|diff|':>12} {'ties':>4} {'ORT max|diff|':>13} "
              f"{'ties':>4} {'argmax agree':>12}")
        for r in rows:
            print(f"{r[0]:8} {r[1]:5d} {r[2]:8d} {r[3]:12.3e} {r[4]:4d} {r[5]:13.3e} {r[6]:4d} {r[7]:12.4f}")
        if len(rows) != len(models):
            fail(f"only {len(rows)} of {len(models)} models were checked")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print("OK: SavedModel and ONNX exports agree with tandem predict")
    return 0


if __name__ == "__main__":
    sys.exit(main())
