// The CUDA Backend: cuBLAS for GEMM, cuDNN (NHWC) for convolutions, our own kernels for the rest.
// This header is plain C++ (no CUDA headers), so that engine/ and tests/ can include it from any
// compiler. Everything CUDA-specific lives in kernels/cuda/*.cu.
#pragma once
#include <memory>
#include <string>

#include "engine/backend.h"

namespace tandem {

// Numerical precision of GEMMs and convolutions. Fp32 is exact IEEE single precision (the
// default; what the CPU oracle computes). Tf32 lets cuBLAS and cuDNN use TF32 tensor cores
// (10-bit mantissa inputs, fp32 accumulation): several times faster on Ampere/Hopper, with
// relative errors around 1e-3 instead of 1e-6. Elementwise kernels are fp32 either way.
enum class GpuPrecision { Fp32, Tf32 };
GpuPrecision parse_gpu_precision(const std::string& text);  // "fp32" | "tf32"; throws InvalidArgument
const char* gpu_precision_name(GpuPrecision p);

struct CudaBackendOptions {
  GpuPrecision precision = GpuPrecision::Fp32;
};

// Number of usable GPUs; 0 (never an error) when there is no driver, no device, or no CUDA runtime.
int cuda_device_count();

// The backend for GPU `device_index`, with options from the environment: TANDEM_GPU_PRECISION
// (fp32 | tf32; default fp32). Throws Error(Device) when no GPU exists or the index is out of range.
std::unique_ptr<Backend> make_cuda_backend(int device_index);
std::unique_ptr<Backend> make_cuda_backend(int device_index, const CudaBackendOptions& options);

// Switches the math precision of a backend made by make_cuda_backend (takes effect for the next
// op; convolution algorithms are re-chosen per precision). Throws InvalidArgument for any other
// backend.
void cuda_set_precision(Backend& backend, GpuPrecision precision);

// The backend's CUDA stream (a cudaStream_t), for code that enqueues its own work in order with
// the backend's (the NCCL all-reduce). Throws InvalidArgument for a non-GPU backend.
void* cuda_native_stream(Backend& backend);

// "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB, driver 12.8" for GPU `device_index` (for logs).
std::string cuda_device_description(int device_index);

}  // namespace tandem
