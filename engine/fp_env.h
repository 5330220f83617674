// The floating-point environment every thread that does the engine's arithmetic runs in: the CPU
// backend's compute threads, and the communication threads whose adds must round like theirs (the
// tree all-reduce of --batch-invariant, docs/ARCHITECTURE.md §6).
#pragma once

namespace tandem {

// Sets flush-to-zero and denormals-are-zero for the calling thread. Denormal floats (e.g. Adam
// moments of weights whose gradient is always zero decaying towards 0) are up to 100x slower on
// x86; TensorFlow and PyTorch flush them too.
void enable_flush_to_zero();

}  // namespace tandem
