// kernels/: the Backend implementations. cpu/ is the reference oracle (OpenBLAS and oneDNN GEMMs and
// convolutions, our loops on a static thread pool); cuda/ runs on GPUs (cuBLAS, cuDNN, our kernels,
// CUDA graphs); backends.h is the factory, the one place that knows them all.
//
// may include: engine, kernels
//
// (tools/check_layers.py reads the line above on every build and fails the build on an include of
// another folder; headers outside these folders - the standard library, third-party libraries,
// generated protobuf and flatbuffers code - are not checked.)
#pragma once
