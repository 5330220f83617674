// dist/: distribution. Communicators (MPI flat or two-level, Gloo), the launchers without MPI
// (TF_CONFIG, torchrun) and their rendezvous, the stall watchdog, bucketed gradient all-reduce with
// overlap, NCCL gradient sync and local reduce, the start-up agreement between ranks, and the
// Strategy that places replicas on backends (hence kernels/: the backend factory, and the CUDA
// backend's stream for NCCL).
//
// may include: engine, kernels, dist
//
// (tools/check_layers.py reads the line above on every build and fails the build on an include of
// another folder; headers outside these folders - the standard library, third-party libraries,
// generated protobuf and flatbuffers code - are not checked.)
#pragma once
