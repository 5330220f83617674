// engine/: the bottom layer. Owns the tensor types (Shape, DType, Device, NamedTensor), typed
// errors, checksums and the floating-point environment; the Backend interface (kernels/ implements
// it); layers, the Model (a Sequential model from a JSON spec, its arena layout and initial weights),
// the Replica, optimizers and schedules; the in-memory Dataset and the epoch shuffle; the Trainer and
// the interfaces it calls (Callback, GradientSync, LocalReduce: tools/ and dist/ implement them); the
// trace recorder behind --timeline.
//
// may include: engine
//
// (tools/check_layers.py reads the line above on every build and fails the build on an include of
// another folder; headers outside these folders - the standard library, third-party libraries,
// generated protobuf and flatbuffers code - are not checked.)
#pragma once
