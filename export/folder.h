// export/: the native model format (weights file, versioned model directories), training
// checkpoints and the file helpers they commit with; the exporters for other runtimes (SavedModel,
// ONNX, TFLite and its quantization, TF.js) and the readers behind `tandem inspect`.
//
// may include: engine, export
//
// (tools/check_layers.py reads the line above on every build and fails the build on an include of
// another folder; headers outside these folders - the standard library, third-party libraries,
// generated protobuf and flatbuffers code - are not checked.)
#pragma once
