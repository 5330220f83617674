#!/usr/bin/env bash
# Installs what Tandem needs on a fresh Debian 12 machine, then configures and builds it in build/.
# Idempotent: a second run only rebuilds what changed. CUDA code is compiled when nvcc exists
# (/usr/local/cuda), whether or not a GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(cmake g++ make pkg-config nlohmann-json3-dev catch2 libcli11-dev zlib1g-dev libopenblas-dev
              openmpi-bin libopenmpi-dev dataset-fashion-mnist python3
              # Gloo: multi-worker collectives for jobs launched without MPI (TF_CONFIG, torchrun)
              libgloo-dev
              # the cluster tests' network-namespace hosts (tests/cluster/cluster.sh)
              iproute2 util-linux iputils-ping
              # a real Slurm for the cluster tests (started by the test on its namespace hosts)
              slurmd slurmctld slurm-client munge
              # protobuf: the SavedModel and ONNX export (required)
              protobuf-compiler libprotobuf-dev
              # tandem serve: gRPC, HTTP, Prometheus; curl and wrk for its tests and benchmarks
              protobuf-compiler-grpc libgrpc++-dev libcpp-httplib-dev
              prometheus-cpp-dev curl wrk
              # oneDNN: the CPU backend's GEMMs and convolutions
              libdnnl-dev
              # TensorFlow Lite export: flatc compiles export/tflite_schema.fbs at build time
              flatbuffers-compiler libflatbuffers-dev
              # fuzzing (tools/fuzz.sh): clang and its libFuzzer runtime
              clang libclang-rt-14-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python packages for the interop tests and peer benchmarks (TensorFlow, ONNX Runtime).
if [ "${TANDEM_SKIP_PIP:-0}" != 1 ]; then
  python3 -m pip install -q --disable-pip-version-check -r tools/requirements.txt 2>&1 | grep -v "Running pip as the 'root'" || true
  # TF Serving's official client: its one dependency is the name `tensorflow`, which tensorflow-cpu
  # (above) provides under another name, so it goes in without dependencies.
  python3 -m pip install -q --disable-pip-version-check --no-deps tensorflow-serving-api 2>&1 | grep -v "Running pip as the 'root'" || true
  # TensorFlow.js's Python loader, for the tfjs export's check: its declared dependencies would pull
  # tensorflow (not -cpu), tensorflow-decision-forests (pinning an older TensorFlow) and JAX, so it goes
  # in without them beside tensorflow-cpu; the check stubs the two modules it imports eagerly.
  python3 -m pip install -q --disable-pip-version-check --no-deps tensorflowjs==4.22.0 tf-keras==2.21.0 \
    tensorflow-hub==0.16.1 2>&1 | grep -v "Running pip as the 'root'" || true
fi

mkdir -p build
# shellcheck disable=SC2086
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DTANDEM_WERROR=ON ${TANDEM_CMAKE_ARGS:-} >build/configure.log 2>&1 ||
  { cat build/configure.log; exit 1; }
sed -n '/feature summary/,/Sanitizers/p' build/configure.log
cmake --build build -j"$(nproc)"
