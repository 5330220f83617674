#!/usr/bin/env python3
"""`tandem serve` against real clients: TF Serving's own Python API (tensorflow-serving-api, gRPC),
Triton's HTTP client (KServe v2), and plain HTTP (requests) for REST.

Checks (one per invocation, each with its own temporary directory, server and loopback ports; every
server is stopped by its PID, also on failure):
  predict    mlp and cnn: predictions for the 10,000 Fashion-MNIST test images equal `tandem predict`
             (max |diff| <= 1e-6, same argmax) through REST rows, REST columns, gRPC tensor_content,
             gRPC float_val and KServe v2 (binary and JSON); metadata, status and health
  hotswap    clients send without pause while version 2 is exported: answers move to version 2 with zero
             failed requests; version 2 deleted: back to version 1, zero failed; labels and a specific
             policy through a config-file edit and through HandleReloadConfigRequest; a label on an
             unavailable version is refused and the old config stays; several models in one server
  lifecycle  a corrupted and a half-copied version are never served (the old one keeps serving), the
             status shows END with the error, logged once; the half-copied one loads once complete;
             start-up errors (malformed config: exit 2 naming file:line; missing base path: exit 2; a
             port another server listens on: exit 2)
  sigterm    SIGTERM while clients send: a long request in flight completes with correct results,
             every answered request succeeded, exit status 0
  badinput   every kind of bad request gets its code and an error message; the server then still
             answers a good request correctly; a half-open connection does not hold up other clients
  limits     gRPC deadline and --rest_api_timeout_in_ms while a request waits: DEADLINE_EXCEEDED / 504
             and not computed (rows_computed metric); body, rows and gRPC message limits; metrics
  batching   mixed request sizes under concurrency (REST and gRPC, with padding) equal tandem predict;
             over max_batch_size 400; a full queue 503 at once; a deadline passing in the queue is not
             computed; a swap under load never mixes versions in a batch; a version's own
             batching_params.pbtxt (--enable_per_model_batching_params)

Usage: serve_check.py PATH/TO/tandem CHECK      Exits 0 (pass), 1 (fail) or 77 (skipped)."""
import gzip
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
try:
    import grpc
    import numpy as np
    import requests
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
                                         model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)
    from tensorflow_serving.config import model_server_config_pb2
except ImportError as e:  # pragma: no cover
    print(f"SKIP: a client package is missing ({e}); tools/setup.sh installs them")
    sys.exit(77)

if len(sys.argv) != 3:
    sys.exit("usage: serve_check.py PATH/TO/tandem CHECK")
TANDEM = os.path.abspath(sys.argv[1])
CHECK = sys.argv[2]
DATA = os.environ.get("TANDEM_DATA", "/usr/share/datasets/fashion-mnist")
if not os.path.exists(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")):
    print(f"SKIP: no Fashion-MNIST in {DATA}")
    sys.exit(77)

failures = []


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f"  ({detail})"), flush=True)
    if not ok:
        failures.append(f"{name}: {detail}")
    return ok


def test_images():
    with gzip.open(os.path.join(DATA, "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    n = struct.unpack(">I", raw[4:8])[0]
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(n, 28, 28, 1)
    return x.astype(np.float32) / np.float32(255)  # as the engine's x / 255.0f


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def make_model(work, preset, seed=42):
    out = os.path.join(work, f"{preset}-{seed}")
    r = run([TANDEM, "train", "--model", preset, "--epochs", "1", "--train-samples", "2000", "--seed", str(seed),
             "--output", out])
    if r.returncode != 0:
        sys.exit(f"train failed: {r.stderr}")
    return os.path.join(out, "model/1")


def export(src, base, version=None):
    cmd = [TANDEM, "export", src, "--to", base, "--format", "native"] + (["--version", str(version)] if version else [])
    r = run(cmd)
    if r.returncode != 0:
        sys.exit(f"export failed: {r.stderr}")


def reference(version_dir, count=10000):
    r = run([TANDEM, "predict", version_dir, "--count", str(count), "--json"])
    if r.returncode != 0:
        sys.exit(f"predict failed: {r.stderr}")
    return np.array([p["probabilities"] for p in json.loads(r.stdout)], np.float32)


class Server:
    def __init__(self, work, args, rest=True):
        self.grpc_port, self.rest_port = free_port(), (free_port() if rest else 0)
        self.log_path = os.path.join(work, f"serve-{self.grpc_port}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([TANDEM, "serve", "--host", "127.0.0.1", "--port", str(self.grpc_port),
                                      "--rest_api_port", str(self.rest_port)] + args,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.rest_port}"
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)
        deadline = time.time() + 60
        while not re.search(r"tandem serve: serving$", self.text(), re.M):  # both front ends are up
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("server did not start:\n" + self.text())
            time.sleep(0.05)

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.channel.close()
        self.log.write(f"[serve_check] server exit status {self.proc.returncode}\n")
        self.log.flush()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def grpc_request(model, x, version=None, label=None, float_val=False):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    t = req.inputs["input"]
    t.dtype = 1  # DT_FLOAT
    for d in x.shape:
        t.tensor_shape.dim.add().size = d
    if float_val:
        t.float_val.extend(x.ravel().tolist())
    else:
        t.tensor_content = np.ascontiguousarray(x, np.float32).tobytes()
    return req


def grpc_probs(resp):
    t = resp.outputs["probabilities"]
    shape = [d.size for d in t.tensor_shape.dim]
    vals = np.frombuffer(t.tensor_content, np.float32) if t.tensor_content else np.array(t.float_val, np.float32)
    return vals.reshape(shape)


def rest_predict(server, model, x, path_extra="", columns=False, timeout=60):
    body = {"inputs": x.tolist()} if columns else {"instances": x.tolist()}
    r = requests.post(f"{server.url}/v1/models/{model}{path_extra}:predict", data=json.dumps(body), timeout=timeout)
    return r


def compare(name, got, want):
    diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
    same = got.shape == want.shape and bool(np.all(np.argmax(got, 1) == np.argmax(want, 1)))
    check(name, diff <= 1e-6 and same, f"shape {got.shape} vs {want.shape}, max diff {diff}, same argmax {same}")


def metric(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rows_computed(server, model):
    """The :tandem:serving:rows_computed metric: rows that reached a forward pass."""
    return metric(requests.get(server.url + "/monitoring/prometheus/metrics").text, ":tandem:serving:rows_computed",
                  model_name=model)


def metrics_config(work):
    path = os.path.join(work, "monitoring.config")
    with open(path, "w") as f:
        f.write("prometheus_config { enable: true }\n")
    return ["--monitoring_config_file", path]


# ---- checks ---------------------------------------------------------------------------------------

def check_predict(work):
    x = test_images()
    for preset in ("mlp", "cnn"):
        src = make_model(work, preset)
        base = os.path.join(work, "serving", preset)
        export(src, base)
        want = reference(src)
        with Server(work, ["--model_name", preset, "--model_base_path", base]) as s:
            chunk = 1000
            rows = np.concatenate([np.array(rest_predict(s, preset, x[i:i + chunk]).json()["predictions"], np.float32)
                                   for i in range(0, len(x), chunk)])
            compare(f"{preset}: REST rows equal tandem predict", rows, want)
            # curl, as a user would call it.
            body = os.path.join(work, "one.json")
            with open(body, "w") as f:
                json.dump({"instances": x[:2].tolist()}, f)
            r = run(["curl", "-s", "-S", "-X", "POST", "--data-binary", "@" + body,
                     f"{s.url}/v1/models/{preset}:predict"], timeout=60)
            got = np.array(json.loads(r.stdout)["predictions"], np.float32) if r.returncode == 0 else np.zeros(0)
            compare(f"{preset}: curl :predict equals tandem predict", got, want[:2])
            r = run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{s.url}/v1/models/{preset}/versions/9"])
            check(f"{preset}: curl status of a missing version: 404", r.stdout == "404", r.stdout)
            cols = np.concatenate([np.array(rest_predict(s, preset, x[i:i + chunk], columns=True).json()["outputs"],
                                            np.float32) for i in range(0, len(x), chunk)])
            compare(f"{preset}: REST columns equal tandem predict", cols, want)
            resp = [s.predict_stub.Predict(grpc_request(preset, x[i:i + 2000]), timeout=120) for i in range(0, len(x), 2000)]
            compare(f"{preset}: gRPC tensor_content equals tandem predict", np.concatenate([grpc_probs(r) for r in resp]), want)
            check(f"{preset}: gRPC answers name model and version",
                  all(r.model_spec.name == preset and r.model_spec.version.value == 1 and
                      r.model_spec.signature_name == "serving_default" for r in resp))
            fv = [grpc_probs(s.predict_stub.Predict(grpc_request(preset, x[i:i + 1000], float_val=True), timeout=120))
                  for i in range(0, len(x), 1000)]
            compare(f"{preset}: gRPC float_val equals tandem predict", np.concatenate(fv), want)
            import tritonclient.http as th
            client = th.InferenceServerClient(f"127.0.0.1:{s.rest_port}")
            check(f"{preset}: v2 live and ready", client.is_server_live() and client.is_server_ready()
                  and client.is_model_ready(preset))
            for binary in (True, False):
                got = []
                for i in range(0, len(x), 1000):
                    inp = th.InferInput("input", list(x[i:i + 1000].shape), "FP32")
                    inp.set_data_from_numpy(x[i:i + 1000], binary_data=binary)
                    out = th.InferRequestedOutput("probabilities", binary_data=binary)
                    got.append(client.infer(preset, [inp], outputs=[out]).as_numpy("probabilities"))
                compare(f"{preset}: KServe v2 ({'binary' if binary else 'JSON'}) equals tandem predict",
                        np.concatenate(got), want)
            meta = client.get_model_metadata(preset)
            check(f"{preset}: v2 metadata", meta["inputs"][0]["shape"] == [-1, 28, 28, 1] and meta["versions"] == ["1"], meta)
            # Metadata and status, REST and gRPC.
            m = requests.get(f"{s.url}/v1/models/{preset}/metadata").json()
            sig = m["metadata"]["signature_def"]["signature_def"]["serving_default"]
            check(f"{preset}: REST metadata", m["model_spec"]["version"] == "1" and
                  [d["size"] for d in sig["inputs"]["input"]["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"] and
                  sig["method_name"] == "tensorflow/serving/predict", m)
            mr = get_model_metadata_pb2.GetModelMetadataRequest()
            mr.model_spec.name = preset
            mr.metadata_field.append("signature_def")
            sm = get_model_metadata_pb2.SignatureDefMap()
            s.predict_stub.GetModelMetadata(mr, timeout=10).metadata["signature_def"].Unpack(sm)
            out_dims = [d.size for d in sm.signature_def["serving_default"].outputs["probabilities"].tensor_shape.dim]
            check(f"{preset}: gRPC metadata", out_dims == [-1, 10], out_dims)
            st = requests.get(f"{s.url}/v1/models/{preset}").json()
            check(f"{preset}: REST status", st == {"model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}, st)
            sr = get_model_status_pb2.GetModelStatusRequest()
            sr.model_spec.name = preset
            gs = s.model_stub.GetModelStatus(sr, timeout=10)
            check(f"{preset}: gRPC status", [(v.version, v.state) for v in gs.model_version_status] == [(1, 30)], gs)
            health = s.channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                           response_deserializer=lambda b: b)
            check(f"{preset}: gRPC health SERVING", health(b"", timeout=10) == b"\x08\x01")


class Load:
    """Clients that send without pause (REST and gRPC), recording the version of every answer."""

    def __init__(self, server, model, x, threads=3):
        self.server, self.model, self.x = server, model, x
        self.stop_flag = threading.Event()
        self.versions, self.errors = [], []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop, args=(i,)) for i in range(threads)]
        for t in self.threads:
            t.start()

    def loop(self, i):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(
            f"127.0.0.1:{self.server.grpc_port}"))
        sess = requests.Session()
        while not self.stop_flag.is_set():
            try:
                if i % 2 == 0:
                    v = stub.Predict(grpc_request(self.model, self.x), timeout=30).model_spec.version.value
                else:
                    r = sess.post(f"{self.server.url}/v2/models/{self.model}/infer", timeout=30, data=json.dumps(
                        {"inputs": [{"name": "input", "shape": list(self.x.shape), "datatype": "FP32",
                                     "data": self.x.ravel().tolist()}]}))
                    if r.status_code != 200:
                        raise RuntimeError(f"HTTP {r.status_code}: {r.text}")
                    v = int(r.json()["model_version"])
                with self.lock:
                    self.versions.append((time.time(), v))
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.errors.append(f"{time.time():.3f} " + repr(e)[:200])

    def wait_for(self, version, timeout=30):
        start = time.time()
        while time.time() - start < timeout:
            with self.lock:
                recent = [v for t, v in self.versions if t > start]
            if recent[-5:] and all(v == version for v in recent[-5:]):
                return True
            time.sleep(0.05)
        return False

    def finish(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join()


def write_config(path, models):
    with open(path + ".tmp", "w") as f:
        f.write("model_config_list {\n")
        for name, base, policy, labels in models:
            f.write(f'  config {{\n    name: "{name}"\n    base_path: "{base}"\n    model_platform: "tensorflow"\n')
            if policy:
                f.write(f"    model_version_policy {{ {policy} }}\n")
            for k, v in labels.items():
                f.write(f'    version_labels {{ key: "{k}" value: {v} }}\n')
            f.write("  }\n")
        f.write("}\n")
    os.replace(path + ".tmp", path)


def version_of(server, model, label):
    return server.predict_stub.Predict(grpc_request(model, np.zeros((1, 28, 28, 1), np.float32), label=label),
                                       timeout=10).model_spec.version.value


def check_hotswap(work):
    x = test_images()[:2]
    v1, v2 = make_model(work, "mlp", 1), make_model(work, "mlp", 2)
    base = os.path.join(work, "serving", "fashion")
    export(v1, base)
    with Server(work, ["--model_name", "fashion", "--model_base_path", base, "--file_system_poll_wait_seconds", "1"]) as s:
        load = Load(s, "fashion", x)
        time.sleep(1)
        export(v2, base)
        moved = load.wait_for(2)
        shutil.rmtree(os.path.join(base, "2"))
        back = load.wait_for(1)
        load.finish()
        check("hot swap: answers come from version 2 after its export", moved, load.versions[-3:])
        check("hot swap: version 2 deleted -> version 1 answers again", back, load.versions[-3:])
        check("hot swap: zero failed requests", not load.errors and len(load.versions) > 50,
              f"{len(load.errors)} errors of {len(load.versions) + len(load.errors)}: {load.errors[:3]}")

    # Labels and a specific policy: a config-file edit, then HandleReloadConfigRequest.
    export(v2, base, 2)
    export(v1, base, 3)
    other = os.path.join(work, "serving", "other")
    export(v2, other, 7)
    config = os.path.join(work, "models.config")
    write_config(config, [("fashion", base, "specific { versions: 1 versions: 2 }", {"stable": 1, "canary": 2}),
                          ("other", other, "", {})])
    with Server(work, ["--model_config_file", config, "--model_config_file_poll_wait_seconds", "1",
                       "--file_system_poll_wait_seconds", "1"]) as s:
        check("labels: stable -> 1, canary -> 2", version_of(s, "fashion", "stable") == 1 and
              version_of(s, "fashion", "canary") == 2)
        check("several models from one config", version_of(s, "other", None) == 7)
        r = requests.post(f"{s.url}/v1/models/fashion/labels/canary:predict", data=json.dumps({"instances": x.tolist()}))
        check("REST by label", r.status_code == 200 and len(r.json()["predictions"]) == 2, r.text[:200])
        # Rollback by editing the file: canary back to 1, policy 1 only.
        write_config(config, [("fashion", base, "specific { versions: 1 }", {"stable": 1, "canary": 1}),
                              ("other", other, "", {})])
        deadline = time.time() + 20
        while time.time() < deadline and version_of(s, "fashion", "canary") != 1:
            time.sleep(0.2)
        check("config-file edit moves canary back to version 1", version_of(s, "fashion", "canary") == 1)
        deadline = time.time() + 20
        while time.time() < deadline and version_of(s, "fashion", None) != 1:
            time.sleep(0.2)
        check("config-file edit: specific policy serves version 1 only", version_of(s, "fashion", None) == 1)
        # HandleReloadConfigRequest: canary onto version 3 (loaded by the same reload).
        def reload(policy_versions, labels):
            req = model_management_pb2.ReloadConfigRequest()
            c = req.config.model_config_list.config.add()
            c.name, c.base_path, c.model_platform = "fashion", base, "tensorflow"
            c.model_version_policy.specific.versions.extend(policy_versions)
            for k, v in labels.items():
                c.version_labels[k] = v
            o = req.config.model_config_list.config.add()
            o.name, o.base_path = "other", other
            try:
                return s.model_stub.HandleReloadConfigRequest(req, timeout=60).status.error_code, ""
            except grpc.RpcError as e:
                return e.code(), e.details()
        code, _ = reload([1, 3], {"stable": 1, "canary": 3})
        check("HandleReloadConfigRequest: canary -> 3", code == 0 and version_of(s, "fashion", "canary") == 3, code)
        code, details = reload([1, 3], {"stable": 1, "canary": 2})  # version 2 is not loaded
        check("a label on an unavailable version is refused", code == grpc.StatusCode.FAILED_PRECONDITION and
              "not currently available" in details, (code, details))
        check("... and the old config stays", version_of(s, "fashion", "canary") == 3)
        code, _ = reload([1], {"stable": 1, "canary": 1})
        check("HandleReloadConfigRequest rollback: canary -> 1", code == 0 and version_of(s, "fashion", "canary") == 1)


def statuses(server, model):
    return {int(v["version"]): v for v in requests.get(f"{server.url}/v1/models/{model}").json()["model_version_status"]}


def check_lifecycle(work):
    x = test_images()[:4]
    v1 = make_model(work, "mlp", 1)
    want1 = reference(v1, 4)
    base = os.path.join(work, "serving", "fashion")
    export(v1, base)
    with Server(work, ["--model_name", "fashion", "--model_base_path", base, "--file_system_poll_wait_seconds",
                       "0.3"]) as s:
        def serving_v1():
            r = rest_predict(s, "fashion", x)
            return r.status_code == 200 and np.max(np.abs(np.array(r.json()["predictions"]) - want1)) <= 1e-6
        # Corrupted version 2: a flipped byte in the middle of its weights, corrupted in staging and
        # moved in whole (a copy then an edit in place would let the poller see a half-copied or a
        # still-intact version first, a different event).
        staging = os.path.join(work, "staging")
        export(make_model(work, "mlp", 2), staging, 2)
        corrupt = os.path.join(work, "corrupt", "2")
        shutil.copytree(os.path.join(staging, "2"), corrupt)
        w = os.path.join(corrupt, "weights.tdw")
        data = bytearray(open(w, "rb").read())
        data[len(data) // 2] ^= 0x40
        open(w, "wb").write(bytes(data))
        os.rename(corrupt, os.path.join(base, "2"))
        time.sleep(2)
        st = statuses(s, "fashion")
        check("corrupted version: END with the error", st.get(2, {}).get("state") == "END" and
              st[2]["status"]["error_code"] != "OK" and "weights.tdw" in st[2]["status"]["error_message"], st)
        check("corrupted version: the old one keeps serving", serving_v1())
        check("corrupted version: the error is logged once", s.text().count("version 2: END, failed to load") == 1,
              s.text().count("version 2: END, failed to load"))
        # Half-copied version 3: model.json only, then a truncated weights file, then the whole file.
        os.makedirs(os.path.join(base, "3"))
        shutil.copy(os.path.join(staging, "2", "model.json"), os.path.join(base, "3"))
        time.sleep(1)
        full = open(os.path.join(staging, "2", "weights.tdw"), "rb").read()
        open(os.path.join(base, "3", "weights.tdw"), "wb").write(full[:len(full) // 2])
        time.sleep(1)
        st = statuses(s, "fashion")
        check("half-copied version: never served", serving_v1() and st.get(3, {}).get("state") == "END", st.get(3))
        open(os.path.join(base, "3", "weights.tdw"), "wb").write(full)
        deadline = time.time() + 20
        while time.time() < deadline and statuses(s, "fashion").get(3, {}).get("state") != "AVAILABLE":
            time.sleep(0.1)
        check("half-copied version: AVAILABLE once its copy completes",
              statuses(s, "fashion").get(3, {}).get("state") == "AVAILABLE")
        r = s.predict_stub.Predict(grpc_request("fashion", x), timeout=10)
        check("... and it answers", r.model_spec.version.value == 3)
    # Start-up errors.
    bad = os.path.join(work, "bad.config")
    open(bad, "w").write('model_config_list {\n  config {\n    name: "a"\n    base_path: /nope\n  }\n}\n')
    r = run([TANDEM, "serve", "--port", str(free_port()), "--rest_api_port", "0", "--model_config_file", bad], timeout=30)
    check("malformed config at start: exit 2 naming file:line", r.returncode == 2 and f"{bad}:4:" in r.stderr, r.stderr)
    r = run([TANDEM, "serve", "--port", str(free_port()), "--model_base_path", os.path.join(work, "missing")], timeout=30)
    check("missing base path at start: exit 2", r.returncode == 2 and "does not exist" in r.stderr, r.stderr)
    # A port another server listens on is refused (no SO_REUSEPORT sharing), for either front end.
    with Server(work, ["--model_name", "fashion", "--model_base_path", base]) as s:
        for flags, what in ((["--port", str(s.grpc_port), "--rest_api_port", "0"], "gRPC"),
                            (["--port", str(free_port()), "--rest_api_port", str(s.rest_port)], "REST")):
            r = run([TANDEM, "serve", "--host", "127.0.0.1", "--model_name", "fashion", "--model_base_path", base] + flags,
                    timeout=60)
            check(f"a {what} port in use: exit 2 naming it", r.returncode == 2 and f"cannot listen for {what}" in r.stderr,
                  r.stderr[-300:])
        r = rest_predict(s, "fashion", x[:1])
        check("... and the first server still answers", r.status_code == 200, r.text[:200])


def check_sigterm(work):
    x = test_images()
    src = make_model(work, "cnn")
    base = os.path.join(work, "serving", "cnn")
    export(src, base)
    want = reference(src, 5000)
    s = Server(work, ["--model_name", "cnn", "--model_base_path", base])
    try:
        load = Load(s, "cnn", x[:1], threads=2)
        result = {}

        def long_request():
            try:
                result["probs"] = grpc_probs(s.predict_stub.Predict(grpc_request("cnn", x[:5000]), timeout=120))
            except Exception as e:  # noqa: BLE001
                result["error"] = repr(e)
        t = threading.Thread(target=long_request)
        t.start()
        time.sleep(0.5)  # the long request is being computed
        sent_at = time.time()
        s.proc.send_signal(signal.SIGTERM)
        t.join(timeout=120)
        load.finish()
        code = s.proc.wait(timeout=60)
        check("SIGTERM: exit status 0", code == 0, code)
        check("SIGTERM: the request in flight completed", "probs" in result, result.get("error"))
        if "probs" in result:
            compare("SIGTERM: ... with correct results", result["probs"], want)
        # After the signal new connections are refused; no answered request failed. gRPC core ends a
        # call that reached the server but was never matched to a handler thread when Shutdown
        # begins with CANCELLED rather than UNAVAILABLE (grpc/grpc#41785): such a call, failing
        # after the signal, was refused, not answered.
        def refused(e):
            after_signal = float(e.split(" ", 1)[0]) >= sent_at
            return ("UNAVAILABLE" in e or "Connection" in e or "refused" in e or
                    (after_signal and "StatusCode.CANCELLED" in e))
        bad = [e for e in load.errors if not refused(e)]
        check("SIGTERM: every answered request succeeded", not bad and len(load.versions) > 0, bad[:3])
        check("SIGTERM: stopped within the drain bound", time.time() - sent_at < 60)
    finally:
        s.stop()


def check_badinput(work):
    src = make_model(work, "mlp")
    base = os.path.join(work, "serving", "fashion")
    export(src, base)
    x = test_images()[:3]
    want = reference(src, 3)
    one = {"instances": x[:1].tolist()}
    with Server(work, ["--model_name", "fashion", "--model_base_path", base, "--max_rows_per_request", "100",
                       "--rest_api_max_body_bytes", "1000000"]) as s:
        u = s.url + "/v1/models/fashion"
        cases = [
            ("malformed JSON", "POST", u + ":predict", '{"instances": [1, 2', 400, "JSON Parse error"),
            ("truncated JSON", "POST", u + ":predict", json.dumps(one)[:-10], 400, "JSON Parse error"),
            ("empty body", "POST", u + ":predict", "", 400, "JSON Parse error"),
            ("deep nesting", "POST", u + ":predict", '{"instances": ' + "[" * 100000 + "]" * 100000 + "}", 400, "nesting"),
            ("wrong rank", "POST", u + ":predict", json.dumps({"instances": [[1.0, 2.0]]}), 400, "must have shape"),
            ("wrong shape", "POST", u + ":predict", json.dumps({"instances": np.zeros((1, 28, 27, 1)).tolist()}), 400, "shape"),
            ("strings", "POST", u + ":predict", json.dumps({"instances": [["a"]]}), 400, "number"),
            ("booleans", "POST", u + ":predict", json.dumps({"instances": [[True]]}), 400, "number"),
            ("instances and inputs", "POST", u + ":predict", json.dumps({"instances": [1], "inputs": [1]}), 400, "inputs"),
            ("neither", "POST", u + ":predict", json.dumps({"signature_name": "serving_default"}), 400,
             "Missing 'inputs' or 'instances' key"),
            ("non-numeric version", "POST", u + "/versions/abc:predict", json.dumps(one), 400, "Malformed request"),
            ("negative version", "POST", u + "/versions/-1:predict", json.dumps(one), 400, "Malformed request"),
            ("overflowing version", "POST", u + "/versions/99999999999999999999:predict", json.dumps(one), 400,
             "Malformed request"),
            ("unknown model", "POST", s.url + "/v1/models/nope:predict", json.dumps(one), 404,
             "Servable not found for request: Latest(nope)"),
            ("unknown version", "POST", u + "/versions/7:predict", json.dumps(one), 404, "Specific(fashion, 7)"),
            ("unknown label", "POST", u + "/labels/zzz:predict", json.dumps(one), 400, "Unrecognized servable version label"),
            ("unknown signature", "POST", u + ":predict", json.dumps(dict(one, signature_name="x")), 400,
             'Serving signature name: "x" not found'),
            ("bad base64", "POST", u + ":predict", json.dumps({"instances": [{"b64": "!!!"}]}), 400, "base64"),
            ("classify on a predict signature", "POST", u + ":classify", json.dumps({"examples": [{"x": 1.0}]}), 400,
             "classification"),
            ("too many rows", "POST", u + ":predict", json.dumps({"instances": np.zeros((101, 28, 28, 1)).tolist()}), 400,
             "at most 100"),
            ("body too large", "POST", u + ":predict", " " * 1000001, 413, "larger than"),
            ("status of an unknown model", "GET", s.url + "/v1/models/nope", "", 404, "Could not find any versions"),
            ("model list", "GET", s.url + "/v1/models", "", 400, "Malformed request"),
            ("v2 wrong datatype", "POST", s.url + "/v2/models/fashion/infer", json.dumps(
                {"inputs": [{"name": "input", "shape": [1, 28, 28, 1], "datatype": "INT64", "data": [0] * 784}]}), 400,
             "FP32"),
            ("v2 short data", "POST", s.url + "/v2/models/fashion/infer", json.dumps(
                {"inputs": [{"name": "input", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": [0.0]}]}), 400, "values"),
        ]
        for name, method, url, body, code, text in cases:
            r = requests.request(method, url, data=body.encode(), timeout=30)
            err = r.json().get("error", "") if r.headers.get("content-type", "").startswith("application/json") else ""
            check(f"REST {name}: {code}", r.status_code == code and text in err, f"{r.status_code} {r.text[:200]}")
        # gRPC.
        def grpc_code(req):
            try:
                s.predict_stub.Predict(req, timeout=10)
                return grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                return e.code(), e.details()
        req = grpc_request("fashion", x[:1])
        req.inputs["input"].tensor_content = req.inputs["input"].tensor_content[:-4]
        g_cases = [("tensor_content length mismatch", req, grpc.StatusCode.INVALID_ARGUMENT, "tensor_content")]
        req = grpc_request("fashion", x[:1])
        req.inputs["input"].dtype = 2
        g_cases.append(("wrong dtype", req, grpc.StatusCode.INVALID_ARGUMENT, "float"))
        req = grpc_request("fashion", x[:1])
        req.inputs["input"].tensor_shape.dim[0].size = -3
        g_cases.append(("negative dimension", req, grpc.StatusCode.INVALID_ARGUMENT, "negative"))
        req = grpc_request("fashion", x[:1])
        req.inputs["input"].tensor_shape.dim[0].size = 2 ** 40
        req.inputs["input"].tensor_shape.dim[1].size = 2 ** 40
        g_cases.append(("overflowing dimensions", req, grpc.StatusCode.INVALID_ARGUMENT, "too large"))
        g_cases.append(("unknown model", grpc_request("nope", x[:1]), grpc.StatusCode.NOT_FOUND, "Latest(nope)"))
        req = grpc_request("fashion", x[:1])
        req.output_filter.append("logits")
        g_cases.append(("unknown output_filter", req, grpc.StatusCode.INVALID_ARGUMENT, "logits"))
        req = grpc_request("fashion", x[:1])
        req.model_spec.signature_name = "x"
        g_cases.append(("unknown signature", req, grpc.StatusCode.FAILED_PRECONDITION, "not found"))
        req = grpc_request("fashion", x[:1])
        req.inputs["wrong"].CopyFrom(req.inputs["input"])
        del req.inputs["input"]
        g_cases.append(("unknown input name", req, grpc.StatusCode.INVALID_ARGUMENT, "wrong"))
        for name, req, code, text in g_cases:
            got, details = grpc_code(req)
            check(f"gRPC {name}: {code.name}", got == code and text in details, (got, details))
        # A half-open connection and a slow sender do not hold up others.
        half = socket.create_connection(("127.0.0.1", s.rest_port))
        half.sendall(b"POST /v1/models/fashion:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"inst")
        t0 = time.time()
        r = rest_predict(s, "fashion", x)
        check("a half-open connection does not hold up another client",
              r.status_code == 200 and time.time() - t0 < 5, time.time() - t0)
        half.close()
        # After all of it: the server is alive and right.
        r = rest_predict(s, "fashion", x)
        compare("after every bad input: a good REST request is answered correctly",
                np.array(r.json()["predictions"], np.float32), want)
        compare("after every bad input: a good gRPC request is answered correctly",
                grpc_probs(s.predict_stub.Predict(grpc_request("fashion", x), timeout=10)), want)
        check("the server is still running", s.proc.poll() is None)


def check_limits(work):
    x = test_images()
    src = make_model(work, "cnn")
    base = os.path.join(work, "serving", "cnn")
    export(src, base)
    # One replica, so that a long request occupies the version and the next ones wait for their turn.
    with Server(work, ["--model_name", "cnn", "--model_base_path", base, "--rest_api_timeout_in_ms", "300",
                       "--grpc_max_message_bytes", "40000000", "--replicas", "1"] + metrics_config(work)) as s:
        before = rows_computed(s, "cnn")
        # A long request (10,000 cnn rows: seconds of compute here) occupies the version; its message is
        # built before the thread starts, so after a second it is computing.
        long_req = grpc_request("cnn", x[:10000])
        t = threading.Thread(target=lambda: s.predict_stub.Predict(long_req, timeout=120))
        t.start()
        time.sleep(1.0)
        try:
            s.predict_stub.Predict(grpc_request("cnn", x[:7]), timeout=0.05)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        r = rest_predict(s, "cnn", x[:5])  # waits behind the long request longer than 300 ms
        t.join()
        check("gRPC deadline while waiting: DEADLINE_EXCEEDED", code == grpc.StatusCode.DEADLINE_EXCEEDED, code)
        check("REST timeout while waiting: 504", r.status_code == 504 and "Deadline" in r.json().get("error", ""),
              r.text[:200])
        time.sleep(0.5)
        computed = rows_computed(s, "cnn") - before
        check("expired requests were not computed (only the 10,000 rows were)", computed == 10000, computed)
        try:
            s.predict_stub.Predict(grpc_request("cnn", x[:9000]), timeout=30)  # 28 MB > 40 MB? no: 9000*3136=28 MB
            big_code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            big_code = e.code()
        check("a gRPC message under the limit is served", big_code == grpc.StatusCode.OK, big_code)
        req = grpc_request("cnn", np.zeros((13000, 28, 28, 1), np.float32))  # 40.8 MB
        try:
            s.predict_stub.Predict(req, timeout=30)
            over = grpc.StatusCode.OK
        except grpc.RpcError as e:
            over = e.code()
        check("a gRPC message over --grpc_max_message_bytes: RESOURCE_EXHAUSTED",
              over == grpc.StatusCode.RESOURCE_EXHAUSTED, over)
        text = requests.get(s.url + "/monitoring/prometheus/metrics").text
        check("metrics: request_count by status",
              metric(text, ":tensorflow:serving:request_count", model_name="cnn", status="DEADLINE_EXCEEDED") == 2 and
              metric(text, ":tensorflow:serving:request_count", model_name="cnn", status="OK", version="1") >= 2, text[:300])
        check("metrics: load count and latency histogram",
              metric(text, ":tandem:serving:model_load_count", model_name="cnn", status="OK") == 1 and
              ":tensorflow:serving:request_latency_bucket{" in text)


def check_batching(work):
    x = test_images()
    src = make_model(work, "cnn")
    base = os.path.join(work, "serving", "cnn")
    export(src, base)
    # Mixed request sizes under concurrency, rows in = rows out; a full queue answers 503.
    want = reference(src, 2000)
    params = os.path.join(work, "batching.config")
    open(params, "w").write("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
                            "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n"
                            "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\nallowed_batch_sizes: 32\n")
    with Server(work, ["--model_name", "cnn", "--model_base_path", base, "--enable_batching",
                       "--batching_parameters_file", params] + metrics_config(work)) as s:
        results, errors = {}, []

        def client(c):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}"))
            at = c * 250
            for i, n in enumerate([1, 3, 7, 5, 2, 9, 4, 6] * 4):
                lo = at + (i * 7) % 200
                try:
                    if i % 2:
                        got = grpc_probs(stub.Predict(grpc_request("cnn", x[lo:lo + n]), timeout=60))
                    else:
                        got = np.array(rest_predict(s, "cnn", x[lo:lo + n]).json()["predictions"], np.float32)
                    results[(lo, n, c, i)] = got
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e)[:200])
        ts = [threading.Thread(target=client, args=(c,)) for c in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        bad = [k for k, v in results.items() if v.shape != (k[1], 10) or np.max(np.abs(v - want[k[0]:k[0] + k[1]])) > 1e-5]
        check("batching: every request gets exactly its rows, equal to tandem predict",
              not errors and not bad and len(results) == 8 * 32, (errors[:2], bad[:3]))
        text = requests.get(s.url + "/monitoring/prometheus/metrics").text
        batches = metric(text, ":tensorflow:serving:batching_session:input_batch_size_count", model_name="cnn")
        check("batching: requests were batched together", 0 < batches < 8 * 32, batches)
        check("batching: padding rows counted", metric(text, ":tandem:serving:padding_rows", model_name="cnn") > 0)
        r = rest_predict(s, "cnn", x[:33])
        check("batching: a request over max_batch_size is 400", r.status_code == 400 and
              "larger than maximum input batch size" in r.text, r.text[:200])
    open(params, "w").write("max_batch_size { value: 8 }\nmax_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n")
    with Server(work, ["--model_name", "cnn", "--model_base_path", base, "--enable_batching",
                       "--batching_parameters_file", params]) as s:
        codes = []

        def burst():
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}"))
            for _ in range(10):
                t0 = time.time()
                try:
                    stub.Predict(grpc_request("cnn", x[:8]), timeout=60)
                    codes.append(("OK", 0))
                except grpc.RpcError as e:
                    codes.append((e.code().name, time.time() - t0))
        ts = [threading.Thread(target=burst) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        full = [d for c, d in codes if c == "UNAVAILABLE"]
        check("batching: a full queue answers UNAVAILABLE (503) at once", full and max(full) < 1.0 and
              all(c in ("OK", "UNAVAILABLE") for c, _ in codes), codes[:10])
        r = rest_predict(s, "cnn", x[:2])
        check("batching: the server answers after a full queue", r.status_code == 200)


    # A request whose deadline passes in the queue (behind a long batch) is dropped, never computed.
    open(params, "w").write("max_batch_size { value: 6000 }\nbatch_timeout_micros { value: 0 }\n"
                            "max_enqueued_batches { value: 10 }\nnum_batch_threads { value: 1 }\n")
    with Server(work, ["--model_name", "cnn", "--model_base_path", base, "--enable_batching", "--threads", "1",
                       "--batching_parameters_file", params] + metrics_config(work)) as s:
        before = rows_computed(s, "cnn")
        long_req = grpc_request("cnn", x[:6000])
        t = threading.Thread(target=lambda: s.predict_stub.Predict(long_req, timeout=120))
        t.start()
        time.sleep(1.0)
        try:
            s.predict_stub.Predict(grpc_request("cnn", x[:7]), timeout=0.2)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        t.join()
        time.sleep(0.3)
        check("batching: a deadline that passes in the queue is DEADLINE_EXCEEDED", code == grpc.StatusCode.DEADLINE_EXCEEDED,
              code)
        computed = rows_computed(s, "cnn") - before
        check("batching: ... and its rows are never computed", computed == 6000, computed)

    # A batch never mixes versions: two versions with different weights, a swap under load, and every
    # answer equal to what the version it names computes.
    src2 = make_model(work, "cnn", seed=7)
    refs = {1: reference(src, 64), 2: reference(src2, 64)}
    open(params, "w").write("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 3000 }\n"
                            "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 2 }\n")
    with Server(work, ["--model_name", "cnn", "--model_base_path", base, "--enable_batching",
                       "--batching_parameters_file", params, "--file_system_poll_wait_seconds", "0.2"]) as s:
        answers, errors, stop = [], [], threading.Event()

        def client(c):
            stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}"))
            i = 0
            while not stop.is_set():
                lo, n = (c * 13 + i * 5) % 60, 1 + (c + i) % 4
                try:
                    r = stub.Predict(grpc_request("cnn", x[lo:lo + n]), timeout=60)
                    answers.append((r.model_spec.version.value, lo, n, grpc_probs(r)))
                except grpc.RpcError as e:
                    errors.append(e.code().name)
                i += 1
        ts = [threading.Thread(target=client, args=(c,)) for c in range(6)]
        for t in ts:
            t.start()
        time.sleep(1.0)
        export(src2, base, 2)
        deadline = time.time() + 30
        while time.time() < deadline and not any(v == 2 for v, *_ in answers[-20:]):
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for t in ts:
            t.join()
        wrong = [(v, lo, n) for v, lo, n, got in answers if v not in refs or
                 np.max(np.abs(got - refs[v][lo:lo + n])) > 1e-5]
        versions = {v for v, *_ in answers}
        check("batching across a swap: both versions answered, zero failed requests",
              versions == {1, 2} and not errors, (versions, errors[:3]))
        check("batching across a swap: every answer is what its version computes (no batch mixed versions)",
              not wrong and len(answers) > 50, (len(answers), wrong[:3]))

    # --enable_per_model_batching_params: a version's batching_params.pbtxt replaces the server's.
    open(os.path.join(base, "2", "batching_params.pbtxt"), "w").write("max_batch_size { value: 4 }\n")
    open(params, "w").write("max_batch_size { value: 32 }\n")
    with Server(work, ["--model_name", "cnn", "--model_base_path", base, "--enable_batching",
                       "--batching_parameters_file", params, "--enable_per_model_batching_params"]) as s:
        ok = rest_predict(s, "cnn", x[:4])
        over = rest_predict(s, "cnn", x[:5])
        check("per-model batching: the version's own max_batch_size (4) holds",
              ok.status_code == 200 and over.status_code == 400 and "maximum input batch size 4" in over.text,
              (ok.status_code, over.text[:200]))
    r = run([TANDEM, "serve", "--port", str(free_port()), "--model_base_path", base,
             "--enable_per_model_batching_params"], timeout=30)
    check("--enable_per_model_batching_params without --enable_batching: exit 2",
          r.returncode == 2 and "needs --enable_batching" in r.stderr, r.stderr)

def check_abuse(work):
    """Connection abuse on loopback: idle connections, a slow body, clients that go away mid-request
    and mid-response, cancelled gRPC calls; a good client is answered correctly throughout. Then the
    server killed with SIGKILL while it loads a version comes back serving the last complete one."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))
    x = test_images()
    src = make_model(work, "mlp")
    base = os.path.join(work, "serving", "mlp")
    export(src, base)
    want = reference(src, 64)
    with Server(work, ["--model_name", "mlp", "--model_base_path", base, "--file_system_poll_wait_seconds", "1"]) as s:
        sess = requests.Session()
        good = {"n": 0, "bad": []}

        def good_request(tag, timeout=10):
            """A new client's request (its own connection): must be answered, and correctly."""
            try:
                r = requests.post(f"{s.url}/v1/models/mlp:predict", data=json.dumps({"instances": x[:4].tolist()}),
                                  timeout=timeout)
                got = np.array(r.json()["predictions"], np.float32) if r.status_code == 200 else None
                ok = got is not None and float(np.max(np.abs(got - want[:4]))) <= 1e-6
                g = grpc_probs(s.predict_stub.Predict(grpc_request("mlp", x[:4]), timeout=timeout))
                ok = ok and float(np.max(np.abs(g - want[:4]))) <= 1e-6
            except Exception as e:  # noqa: BLE001
                ok, r = False, e
            good["n"] += 1
            if not ok:
                good["bad"].append(f"{tag}: {r!r}"[:200])

        # 1,000 connections opened and left idle (httplib alone gave each a worker: 64 busy workers
        # made a new client wait ~75 s). The server closes them after its keep-alive idle time.
        idle = [socket.create_connection(("127.0.0.1", s.rest_port)) for _ in range(1000)]
        for _ in range(10):
            good_request("1,000 idle connections")
        check("abuse: 1,000 idle connections: other clients answered correctly", not good["bad"], good["bad"][:3])
        time.sleep(7)  # past --rest keep-alive (5 s): the server has closed them
        closed = 0
        for c in idle:
            c.settimeout(0.5)
            try:
                closed += c.recv(1) == b""
            except (socket.timeout, ConnectionResetError):
                closed += 0
            c.close()
        check("abuse: idle connections are closed after the keep-alive time", closed == len(idle), f"{closed} of {len(idle)}")

        # A body sent one byte a second, alongside good clients: the slow one holds one worker for
        # the read timeout (10 s) at most, and gets a 400 or a closed connection, never a hang.
        slow_result = {}

        def slow_client():
            c = socket.create_connection(("127.0.0.1", s.rest_port))
            body = json.dumps({"instances": x[:1].tolist()}).encode()
            c.sendall(b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            start = time.time()

            def reader():  # the server's answer, and then the end of the connection
                c.settimeout(40)
                try:
                    reply = c.recv(4096)
                    slow_result["reply_at"] = time.time() - start
                    while True:  # headers and body may come in separate reads; then the end
                        more = c.recv(4096)
                        if not more:
                            break
                        reply += more
                    slow_result["reply"] = reply
                    slow_result["eof"] = True
                    slow_result["closed_at"] = time.time() - start
                except OSError as e:
                    slow_result["error"] = repr(e)
            r = threading.Thread(target=reader)
            r.start()
            try:
                for i in range(30):
                    if "reply" in slow_result:
                        break
                    c.sendall(body[i:i + 1])
                    time.sleep(1)
            except OSError:
                pass
            r.join()
            c.close()
        t = threading.Thread(target=slow_client)
        t.start()
        bad_before = len(good["bad"])
        while t.is_alive():
            good_request("a slow body")
            time.sleep(0.2)
        t.join()
        check("abuse: a body at one byte a second: others answered", len(good["bad"]) == bad_before, good["bad"][-3:])
        check("abuse: ... and the slow client gets 400 after the read timeout (10 s), then the connection closes",
              b" 400 " in slow_result.get("reply", b"")[:20] and slow_result.get("eof") and
              slow_result.get("closed_at", 99) < 15, slow_result)

        # Clients that go away: mid-request (half a body) and mid-response (a large reply unread).
        big = json.dumps({"instances": x[:2000].tolist()}).encode()
        for i in range(20):
            c = socket.create_connection(("127.0.0.1", s.rest_port))
            c.sendall(b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(big)).encode() +
                      b"\r\n\r\n" + big[:len(big) // (2 + i % 3)])
            c.close()
            c = socket.create_connection(("127.0.0.1", s.rest_port))
            c.sendall(b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(big)).encode() +
                      b"\r\n\r\n" + big)
            c.recv(100)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, data unread
            c.close()
        # gRPC calls cancelled while being computed.
        futures = [s.predict_stub.Predict.future(grpc_request("mlp", x[:2000]), timeout=30) for _ in range(20)]
        time.sleep(0.02)
        for f in futures:
            f.cancel()
        bad_before = len(good["bad"])
        for _ in range(10):
            good_request("disconnects and cancellations")
        check("abuse: clients gone mid-request, mid-response, cancelled gRPC calls: others answered correctly",
              len(good["bad"]) == bad_before, good["bad"][-3:])
        check("abuse: the server is still running", s.proc.poll() is None, s.proc.returncode)

        # SIGKILL while version 2 (a cnn, seconds to warm up) loads; the restarted server serves it.
        src2 = make_model(work, "cnn", seed=3)
        export(src2, base, 2)
        deadline = time.time() + 60
        while "version 2: LOADING" not in s.text() and time.time() < deadline:
            time.sleep(0.01)
        s.proc.kill()
        s.proc.wait()
        check("abuse: SIGKILL landed while version 2 was loading",
              "version 2: LOADING" in s.text() and "version 2: AVAILABLE" not in s.text(), s.text()[-300:])
    with Server(work, ["--model_name", "mlp", "--model_base_path", base]) as s2:
        r = rest_predict(s2, "mlp", x[:8])
        got = np.array(r.json()["predictions"], np.float32) if r.status_code == 200 else np.zeros((0,))
        check("abuse: restarted after SIGKILL, it serves version 2 (the last complete one)",
              r.status_code == 200 and version_of(s2, "mlp", None) == 2, (r.status_code, r.text[:200]))
        compare("abuse: ... with version 2's results", got, reference(src2, 8))


CHECKS = {"predict": check_predict, "hotswap": check_hotswap, "lifecycle": check_lifecycle, "sigterm": check_sigterm,
          "badinput": check_badinput, "limits": check_limits, "batching": check_batching, "abuse": check_abuse}
# benchmarks/serve/soak.py imports the helpers above (with argv set to [_, tandem, 'none']).
if __name__ == "__main__":
    if CHECK not in CHECKS:
        sys.exit(f"unknown check {CHECK}; one of {', '.join(CHECKS)}")
    work = tempfile.mkdtemp(prefix=f"tandem-serve-{CHECK}-")
    try:
        CHECKS[CHECK](work)
    except Exception as e:  # noqa: BLE001 - a crash of the check is a failure with its reason
        import traceback
        traceback.print_exc()
        failures.append(f"{CHECK} raised {e!r}")
    finally:
        if failures:  # the servers' logs say what they saw
            for name in sorted(os.listdir(work)):
                if name.startswith("serve-") and name.endswith(".log"):
                    with open(os.path.join(work, name)) as f:
                        print(f"---- {name} (last lines)\n" + "".join(f.readlines()[-15:]))
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"serve {CHECK}: all checks passed")
