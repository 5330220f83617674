#!/usr/bin/env python3
"""Bad input to the `tandem` CLI: each case must exit with the documented status (2 = bad input,
1 = other failure), print one clear error with a hint on stderr, never die from a signal, and never
lose what an earlier run saved. Also checks that a tiny end-to-end run writes what it promises."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from testdata import idx_bytes, make_dataset, tree_bytes  # noqa: E402

TANDEM = sys.argv[1]
failures = []


def make_data(root, n_train=64, n_test=32, label_max=9, mutate=None):
    return make_dataset(root, n_train, n_test, label_max=label_max, learnable=False, mutate=mutate, seed=1)


def run(args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([TANDEM] + args, capture_output=True, text=True, env=e, timeout=300)


def expect(name, args, status, needle, env=None):
    """needle: the text stderr must contain, or a tuple of texts of which it must contain one."""
    r = run(args, env)
    problems = []
    if r.returncode < 0:
        problems.append(f"killed by signal {-r.returncode}")
    elif r.returncode != status:
        problems.append(f"exit status {r.returncode}, expected {status}")
    err = r.stderr.strip()
    needles = needle if isinstance(needle, tuple) else (needle,)
    if not any(n.lower() in err.lower() for n in needles):
        problems.append(f"stderr lacks {' or '.join(repr(n) for n in needles)}")
    if status != 0 and "hint" not in err and not err.startswith("--") and "Run with --help" not in err:
        problems.append("no hint")
    if "terminate called" in err or "Aborted" in err:
        problems.append("crashed")
    if problems:
        failures.append(f"{name}: {'; '.join(problems)}\n    stderr: {err[:500]}")
    print(("ok   " if not problems else "FAIL ") + name)
    return r


tmp = tempfile.mkdtemp(prefix="tandem-cli-")
try:
    good = make_data(os.path.join(tmp, "good"))
    quick = ["--data", good, "--epochs", "1", "--batch-size", "16", "--validation-size", "16", "--threads", "1"]

    # Flags.
    expect("batch size 0", ["train", "--batch-size", "0"] + quick[:2], 2, "batch-size")
    expect("negative epochs", ["train", "--epochs", "-1", "--data", good], 2, "epochs")
    expect("unknown optimizer", ["train", "--optimizer", "rmsprop2"] + quick, 2, "unknown optimizer")
    expect("non-numeric flag", ["train", "--epochs", "ten"], 2, "epochs")
    expect("unknown flag", ["train", "--epoch", "3"], 2, "--epoch")
    expect("validation larger than the data", ["train", "--data", good, "--validation-size", "64"], 2,
           "validation")
    expect("unknown preset", ["train", "--model", "resnet"] + quick, 2, "unknown model")
    expect("tpu device", ["train", "--device", "tpu:0"] + quick, 2, "TPU")
    expect("gpu without a GPU", ["train", "--device", "gpu:0"] + quick, 1, "--device cpu")
    expect("lr schedule", ["train", "--lr-schedule", "cosine"] + quick, 2, "schedule")
    # An explicit rate is never silently replaced by the default.
    for bad_lr in ("nan", "-1", "0", "inf"):
        expect(f"--lr {bad_lr}", ["train", "--lr", bad_lr] + quick, 2, "--lr must be a finite positive number")
    expect("--momentum 1", ["train", "--optimizer", "sgd", "--momentum", "1"] + quick, 2, "--momentum must be in [0, 1)")
    expect("--momentum -0.5", ["train", "--optimizer", "sgd", "--momentum", "-0.5"] + quick, 2, "--momentum")
    expect("--lr-decay-rate 0", ["train", "--lr-decay-rate", "0"] + quick, 2, "--lr-decay-rate must be in (0, 1]")
    expect("--lr-decay-rate 1.5", ["train", "--lr-decay-rate", "1.5"] + quick, 2, "--lr-decay-rate")
    # Each bad optimizer flag is one line naming the flag and the value, with a hint, and the run
    # writes nothing: not even its --output directory.
    for i, (flags, line) in enumerate((
            (["--lr", "nan"], "--lr must be a finite positive number, got nan"),
            (["--lr", "-1"], "--lr must be a finite positive number, got -1"),
            (["--lr", "-inf"], "--lr must be a finite positive number, got -inf"),
            (["--optimizer", "sgd", "--momentum", "nan"], "--momentum must be in [0, 1), got nan"),
            (["--optimizer", "sgd", "--momentum", "1.5"], "--momentum must be in [0, 1), got 1.5"),
            (["--momentum", "0.9"], "--momentum applies to --optimizer sgd only"),
            (["--lr-decay-rate", "nan"], "--lr-decay-rate must be in (0, 1], got nan"),
            (["--lr-decay-rate", "-0.5"], "--lr-decay-rate must be in (0, 1], got -0.5"))):
        never = os.path.join(tmp, f"never-written-{i}")
        r = expect(" ".join(flags) + " writes nothing", ["train"] + flags + quick + ["--output", never], 2, line)
        lines = r.stderr.strip().splitlines()
        if len(lines) != 2 or not lines[1].strip().startswith("hint: "):
            failures.append(f"{' '.join(flags)}: expected one error line and one hint line, got {lines}")
        if os.path.exists(never):
            failures.append(f"{' '.join(flags)}: the refused run created its --output directory")
    not_dir = os.path.join(tmp, "a-file")
    open(not_dir, "w").close()
    expect("--resume of a file", ["train", "--resume", not_dir] + quick, 2, "not a directory")
    expect("unknown communicator", ["train", "--communicator", "pigeon"] + quick, 2, "--communicator")
    # Refused either way: by a build with NCCL for the CPU replicas, by one without for the build
    # (CI's sanitizer build has no CUDA).
    expect("nccl for CPU replicas", ["train", "--communicator", "nccl"] + quick, 2, ("GPU", "no NCCL support"))
    expect("--batch-invariant not a power of 2", ["train", "--batch-invariant", "6"] + quick, 2, "power of 2")
    expect("--batch-invariant leaves over too many replicas",
           ["train", "--batch-invariant", "2", "--strategy", "mirrored", "--devices", "cpu:0,cpu:1,cpu:2,cpu:3"] + quick,
           2, "do not split evenly over 4 replicas")
    expect("bad --cuda-graphs value", ["train", "--cuda-graphs", "maybe"] + quick, 2, "--cuda-graphs must be on or off")

    # TerminateOnNaN: SGD at 1e30 has a finite loss at step 1 (the initial weights) and overflows at
    # step 2. The run stops there with exit 1 and writes no model version; the checkpoint of step 1
    # stays committed, and a resume that diverges again leaves the checkpoints byte for byte as they were.
    nan_out = os.path.join(tmp, "nan")
    diverging = quick[:2] + ["--epochs", "3", "--batch-size", "16", "--validation-size", "16", "--threads", "1",
                             "--optimizer", "sgd", "--lr", "1e30", "--checkpoint-every", "1"]
    for label in ("a diverging run", "its resume"):
        flags = ["--output", nan_out] if label == "a diverging run" else ["--resume", nan_out]
        before = tree_bytes(os.path.join(nan_out, "checkpoints")) if label == "its resume" else None
        r = expect(label + " stops on a non-finite loss", ["train"] + diverging + flags, 1,
                   "at epoch 1, step 2/3: training stopped, nothing saved")
        if "saved model version" in r.stdout or os.path.exists(os.path.join(nan_out, "model")):
            failures.append(label + ": wrote a model version from diverged weights")
        for f in ("history.json", "metrics.json"):
            if os.path.exists(os.path.join(nan_out, f)):
                failures.append(f"{label}: wrote {f}")
        ckpts = sorted(n for n in os.listdir(os.path.join(nan_out, "checkpoints")) if n.startswith("ckpt-"))
        if ckpts != ["ckpt-000000000001"]:
            failures.append(f"{label}: checkpoints {ckpts}, expected only step 1's")
        if before is not None and tree_bytes(os.path.join(nan_out, "checkpoints")) != before:
            failures.append(label + ": changed the committed checkpoints")

    # Model specs.
    def spec(name, obj):
        p = os.path.join(tmp, name + ".json")
        with open(p, "w") as f:
            f.write(obj if isinstance(obj, str) else json.dumps(obj))
        return p
    base = {"input_shape": [28, 28, 1], "layers": [{"type": "Flatten"},
                                                   {"type": "Dense", "units": 10, "activation": "softmax"}]}
    bad_layer = json.loads(json.dumps(base)); bad_layer["layers"][0]["type"] = "Flattenn"
    missing = json.loads(json.dumps(base)); del missing["layers"][1]["units"]
    shapes = {"input_shape": [28, 28, 1], "layers": [{"type": "Conv2D", "filters": 4, "kernel_size": 29},
                                                     {"type": "Flatten"},
                                                     {"type": "Dense", "units": 10, "activation": "softmax"}]}
    wrong_classes = json.loads(json.dumps(base)); wrong_classes["layers"][1]["units"] = 7
    expect("unknown layer", ["train", "--model", spec("bad_layer", bad_layer)] + quick, 2, "unknown layer type")
    expect("missing field", ["train", "--model", spec("missing", missing)] + quick, 2, "missing field \"units\"")
    expect("impossible shapes", ["train", "--model", spec("shapes", shapes)] + quick, 2, "does not fit")
    expect("not JSON", ["train", "--model", spec("garbage", "{\"layers\": [")] + quick, 2, "not valid JSON")
    expect("classes mismatch", ["train", "--model", spec("classes", wrong_classes)] + quick, 2, "classes")
    expect("missing spec file", ["train", "--model", os.path.join(tmp, "nope.json")] + quick, 2, "cannot open")

    # Data files.
    def trunc(files):
        files["train-images-idx3-ubyte"] = files["train-images-idx3-ubyte"][:-100]
    def count(files):
        files["train-labels-idx1-ubyte"] = idx_bytes([63], files["train-labels-idx1-ubyte"][8:-1])
    def magic(files):
        files["t10k-images-idx3-ubyte"] = b"\x00\x00\x0f" + files["t10k-images-idx3-ubyte"][3:]
    expect("truncated IDX", ["train"] + quick[:0] + ["--data", make_data(os.path.join(tmp, "t"), mutate=trunc)] +
           quick[2:], 2, "truncated")
    expect("count mismatch", ["train", "--data", make_data(os.path.join(tmp, "c"), mutate=count)] + quick[2:], 2,
           "count")
    expect("labels out of range", ["train", "--data", make_data(os.path.join(tmp, "l"), label_max=12)] + quick[2:],
           2, "label")
    expect("bad type byte", ["train", "--data", make_data(os.path.join(tmp, "m"), mutate=magic)] + quick[2:], 2,
           "type")
    expect("missing data dir", ["train", "--data", os.path.join(tmp, "absent")] + quick[2:], 2,
           "dataset-fashion-mnist")

    # Multi-worker jobs launched without MPI: a bad TF_CONFIG or torchrun variable is exit 2, named.
    mw = ["train"] + quick + ["--strategy", "multi-worker", "--output", os.path.join(tmp, "mw")]
    for name, env, needle in [
            ("TF_CONFIG not JSON", {"TF_CONFIG": "{cluster"}, "TF_CONFIG: not JSON"),
            ("TF_CONFIG index out of range", {"TF_CONFIG": json.dumps(
                {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}})}, "task.index 1"),
            ("TF_CONFIG with a ps job", {"TF_CONFIG": json.dumps(
                {"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker", "index": 0}})},
             "parameter servers"),
            ("TF_CONFIG duplicate address", {"TF_CONFIG": json.dumps(
                {"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}})}, "repeats"),
            ("torchrun RANK missing", {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "WORLD_SIZE": "2"},
             "RANK is not set"),
            ("torchrun RANK >= WORLD_SIZE", {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "RANK": "2",
                                             "WORLD_SIZE": "2"}, "below WORLD_SIZE")]:
        expect(name, mw, 2, needle, env=env)
    expect("--communicator mpi under TF_CONFIG", mw + ["--communicator", "mpi"], 2, "needs an MPI launcher",
           env={"TF_CONFIG": json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker",
                                                                                        "index": 0}})})

    # A real run, then corrupted weights; earlier versions survive later runs.
    out = os.path.join(tmp, "out")
    r = run(["train"] + quick + ["--output", out])
    if r.returncode != 0:
        failures.append("tiny training run failed: " + r.stderr)
    else:
        metrics = json.load(open(os.path.join(out, "metrics.json")))
        history = json.load(open(os.path.join(out, "history.json")))
        for key in ("test_loss", "test_accuracy", "epochs", "samples_per_second"):
            if key not in metrics:
                failures.append("metrics.json lacks " + key)
        if len(history.get("val_accuracy", [])) != 1:
            failures.append("history.json lacks one val_accuracy entry")
        r2 = run(["train"] + quick + ["--output", out, "--seed", "5"])
        if r2.returncode != 0 or not os.path.isdir(os.path.join(out, "model", "2")):
            failures.append("second run did not write model/2")
        v1 = os.path.join(out, "model", "1")
        ok = run(["inspect", v1])
        if ok.returncode != 0 or "digest" not in ok.stdout:
            failures.append("inspect failed on a good model: " + ok.stderr)
        # TFLite quantization flags: each mistake is refused before anything is written.
        served = os.path.join(tmp, "served", "m")
        exp = ["export", v1, "--to", served, "--format", "tflite"]
        expect("--quantize int4", exp + ["--quantize", "int4"], 2, "unknown --quantize 'int4'")
        expect("int8 with 5 calibration images", exp + ["--quantize", "int8", "--data", good,
                                                        "--calibration-samples", "5"], 2,
               "--calibration-samples must be at least 100")
        expect("int8 with more calibration images than the data has", exp + ["--quantize", "int8", "--data", good], 2,
               "--calibration-samples 500 is more than the 64 training images")
        expect("--quantize without tflite", ["export", v1, "--to", served, "--format", "onnx", "--quantize", "float16"],
               2, "--quantize float16")
        expect("--int8-io without int8", exp + ["--quantize", "dynamic", "--int8-io"], 2,
               "--int8-io applies to --quantize int8 only")
        expect("--calibration-samples without int8", exp + ["--calibration-samples", "200"], 2,
               "--calibration-samples applies to --quantize int8 only")
        if os.path.exists(served) and os.listdir(served):
            failures.append("a refused quantized export wrote " + ", ".join(os.listdir(served)))
        # A bad run afterwards must not touch the saved versions.
        run(["train", "--batch-size", "0", "--output", out] + quick[:2])
        if not os.path.isdir(v1) or run(["inspect", v1]).returncode != 0:
            failures.append("a failing run damaged a saved version")
        bad = os.path.join(tmp, "bad", "1")
        shutil.copytree(v1, bad)
        wpath = os.path.join(bad, "weights.tdw")
        data = bytearray(open(wpath, "rb").read())
        data[-5] ^= 0x10
        open(wpath, "wb").write(bytes(data))
        expect("bit flip in weights", ["evaluate", bad, "--data", good], 2, "checksum")
        open(wpath, "wb").write(bytes(data[: len(data) // 2]))
        expect("truncated weights", ["inspect", bad], 2, "weights.tdw")
        os.remove(wpath)
        expect("missing weights", ["predict", bad, "--data", good], 2, "weights.tdw")
        expect("not a model dir", ["evaluate", os.path.join(tmp, "nowhere"), "--data", good], 2, "nowhere")
finally:
    shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print("\n".join(failures))
    sys.exit(1)
print("all CLI error cases behave")
