// tools/: the `tandem` CLI, which assembles everything: flags into objects, then runs them; the only
// place that catches errors and exits (docs/ARCHITECTURE.md §8). tools/callbacks/: the training
// callbacks, one per file.
//
// may include: engine, kernels, data, storage, export, dist, serve, tools
//
// (tools/check_layers.py reads the line above on every build and fails the build on an include of
// another folder; headers outside these folders - the standard library, third-party libraries,
// generated protobuf and flatbuffers code - are not checked.)
#pragma once
