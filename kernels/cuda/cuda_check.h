// Checked CUDA / cuBLAS / cuDNN calls: every failure becomes Error(Device) naming file:line, the
// call, the library's error name and text, and a hint. Only included by kernels/cuda sources.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "engine/errors.h"

// cuDNN is used when its header is reachable (the build links tandem::cudnn whenever it finds
// it). Without it, convolutions fall back to our im2col kernels + cuBLAS.
#if !defined(TANDEM_NO_CUDNN) && (defined(TANDEM_HAVE_CUDNN) || __has_include(<cudnn.h>))
#include <cudnn.h>
#define TANDEM_CUDA_USE_CUDNN 1
#else
#define TANDEM_CUDA_USE_CUDNN 0
#endif

namespace tandem::cuda_detail {

std::string cuda_hint(cudaError_t e);
[[noreturn]] void throw_cuda(cudaError_t e, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas(cublasStatus_t s, const char* call, const char* file, int line);
#if TANDEM_CUDA_USE_CUDNN
[[noreturn]] void throw_cudnn(cudnnStatus_t s, const char* call, const char* file, int line);
#endif
// For teardown paths (destructors, deallocate) that must not throw: prints one line to stderr.
void warn_cuda(cudaError_t e, const char* call, const char* file, int line);

}  // namespace tandem::cuda_detail

#define TANDEM_CUDA_CHECK(call)                                                                                \
  do {                                                                                                         \
    cudaError_t tandem_err_ = (call);                                                                          \
    if (tandem_err_ != cudaSuccess) ::tandem::cuda_detail::throw_cuda(tandem_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define TANDEM_CUDA_WARN(call)                                                                                \
  do {                                                                                                        \
    cudaError_t tandem_err_ = (call);                                                                         \
    if (tandem_err_ != cudaSuccess) ::tandem::cuda_detail::warn_cuda(tandem_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define TANDEM_CUBLAS_CHECK(call)                                                 \
  do {                                                                            \
    cublasStatus_t tandem_st_ = (call);                                           \
    if (tandem_st_ != CUBLAS_STATUS_SUCCESS)                                      \
      ::tandem::cuda_detail::throw_cublas(tandem_st_, #call, __FILE__, __LINE__); \
  } while (0)

#define TANDEM_CUDNN_CHECK(call)                                                                                       \
  do {                                                                                                                 \
    cudnnStatus_t tandem_st_ = (call);                                                                                 \
    if (tandem_st_ != CUDNN_STATUS_SUCCESS) ::tandem::cuda_detail::throw_cudnn(tandem_st_, #call, __FILE__, __LINE__); \
  } while (0)

// Launch a kernel on `stream` and check the launch (asynchronous faults surface at the next
// checked synchronising call, named there).
#define TANDEM_LAUNCH(kernel, grid, block, shmem, stream, ...)   \
  do {                                                           \
    kernel<<<(grid), (block), (shmem), (stream)>>>(__VA_ARGS__); \
    TANDEM_CUDA_CHECK(cudaGetLastError());                       \
  } while (0)
