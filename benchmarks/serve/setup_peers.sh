#!/usr/bin/env bash
# The serving benchmark's peer: KServe's Python model server with ONNX Runtime, in a virtual
# environment of its own (kserve pins fastapi/uvicorn/protobuf/grpcio versions that would clash
# with TensorFlow's). Prints the venv's python. Set TANDEM_PEER_VENVS to put it elsewhere.
set -euo pipefail
venv="${TANDEM_PEER_VENVS:-$HOME/.cache/tandem-venvs}/kserve"
if ! "$venv/bin/python" -c "import kserve, onnxruntime" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kserve==0.21.0" "onnxruntime==1.32.0" numpy >&2
fi
echo "$venv/bin/python"
