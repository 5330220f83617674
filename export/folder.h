// export/: the exporters for other runtimes (SavedModel, ONNX, TFLite and its quantization, TF.js)
// from a saved model version (storage/), and the readers of those formats behind `tandem inspect`.
//
// may include: engine, storage, export
//
// (tools/check_layers.py reads the line above on every build and fails the build on an include of
// another folder; headers outside these folders - the standard library, third-party libraries,
// generated protobuf and flatbuffers code - are not checked.)
#pragma once
