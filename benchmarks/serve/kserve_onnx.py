#!/usr/bin/env python3
"""The peer for benchmarks/serve/serve_bench.py: KServe's Python model server (PyPI `kserve`) serving
Tandem's exported model.onnx with ONNX Runtime, as a KServe user would write it (a kserve.Model with
load() and predict()). KServe's V1 protocol is TF Serving's REST API, so the same wrk script hits
POST /v1/models/NAME:predict {"instances": [...]} -> {"predictions": [...]}.

KServe's Python server has no dynamic batching of its own (KServe's batcher is a separate Kubernetes
sidecar, not part of this process), so each request runs its own ORT session call.

Usage: kserve_onnx.py --model_name NAME --onnx PATH [--threads 2] [--http_port 8080] [--workers 1]
Runs in its own virtual environment (benchmarks/serve/setup_peers.sh): kserve pins fastapi,
uvicorn, protobuf and grpcio versions that differ from the ones beside TensorFlow."""
import argparse

import kserve
import numpy as np
import onnxruntime as ort


class OnnxModel(kserve.Model):
    def __init__(self, name, path, threads):
        super().__init__(name)
        self.path, self.threads = path, threads
        self.session = None
        self.load()

    def load(self):
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        x = np.asarray(payload["instances"], dtype=np.float32)
        y = self.session.run(None, {self.input_name: x})[0]
        return {"predictions": y.tolist()}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a, _ = ap.parse_known_args()
    kserve.ModelServer(enable_grpc=False).start([OnnxModel(a.model_name, a.onnx, a.threads)])
