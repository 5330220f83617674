// The backend factory: the one place that knows every Backend implementation (kernels/cpu/, and
// kernels/cuda/ when built with CUDA). The engine sees only the Backend interface (engine/backend.h).
#pragma once
#include <memory>

#include "engine/backend.h"

namespace tandem {

std::unique_ptr<Backend> make_cpu_backend(int threads);
// Throws Error(Device) when CUDA support is absent or no such GPU exists.
std::unique_ptr<Backend> make_backend(const Device& device, int threads);
bool cuda_available();  // compiled in and at least one GPU usable

}  // namespace tandem
