// serve/: `tandem serve`, a TensorFlow Serving-compatible server: the model manager (polling,
// version policies, labels, swaps), servables on backends (kernels/), batching, the REST and gRPC
// front ends, config files and metrics. It loads the native model format (storage/).
//
// may include: engine, kernels, storage, serve
//
// (tools/check_layers.py reads the line above on every build and fails the build on an include of
// another folder; headers outside these folders - the standard library, third-party libraries,
// generated protobuf and flatbuffers code - are not checked.)
#pragma once
