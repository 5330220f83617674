// data/: reading data sets from files into engine/dataset.h's Dataset: the IDX(.gz) reader with
// strict validation, the Fashion-MNIST loader, the validation split.
//
// may include: engine, data
//
// (tools/check_layers.py reads the line above on every build and fails the build on an include of
// another folder; headers outside these folders - the standard library, third-party libraries,
// generated protobuf and flatbuffers code - are not checked.)
#pragma once
