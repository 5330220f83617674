// storage/: the project's own files. The native weights file (CRC32C on every tensor), versioned
// model directories (<name>/<version>/, committed atomically), the model a version loads into,
// training checkpoints and their background writer, and the POSIX file helpers they commit with
// (temporary sibling, fsync, rename).
//
// may include: engine, storage
//
// (tools/check_layers.py reads the line above on every build and fails the build on an include of
// another folder; headers outside these folders - the standard library, third-party libraries,
// generated protobuf and flatbuffers code - are not checked.)
#pragma once
