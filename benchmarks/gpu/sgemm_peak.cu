// Peak cuBLAS SGEMM throughput on GPU 0, in fp32 (exact) and TF32 (tensor cores) math modes: the
// ceiling against which benchmarks/gpu/bench_gpu.py reports the cnn's achieved FLOP/s.
// Standalone (no Tandem code): tools/gpu-check builds it with
//   nvcc -O2 -arch=sm_90 benchmarks/gpu/sgemm_peak.cu -lcublas -o build-gpu/sgemm_peak
// Usage: sgemm_peak [N=8192] [iterations=20]. Prints one JSON line.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CHECK_CUDA(x)                                                                             \
  do {                                                                                            \
    cudaError_t e_ = (x);                                                                         \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)
#define CHECK_CUBLAS(x)                                                                           \
  do {                                                                                            \
    cublasStatus_t s_ = (x);                                                                      \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                            \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cublasGetStatusString(s_)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

__global__ void init(float* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = (unsigned(i) ^ seed) * 2654435761u;
    p[i] = float(h >> 8) * (1.0f / 16777216.0f) - 0.5f;
  }
}

static double run(cublasHandle_t h, int n, int iters, const float* a, const float* b, float* c) {
  const float one = 1.f, zero = 0.f;
  for (int i = 0; i < 3; ++i)
    CHECK_CUBLAS(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, n, b, n, &zero, c, n));
  cudaEvent_t t0, t1;
  CHECK_CUDA(cudaEventCreate(&t0));
  CHECK_CUDA(cudaEventCreate(&t1));
  CHECK_CUDA(cudaEventRecord(t0));
  for (int i = 0; i < iters; ++i)
    CHECK_CUBLAS(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, n, b, n, &zero, c, n));
  CHECK_CUDA(cudaEventRecord(t1));
  CHECK_CUDA(cudaEventSynchronize(t1));
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, t0, t1));
  CHECK_CUDA(cudaEventDestroy(t0));
  CHECK_CUDA(cudaEventDestroy(t1));
  return 2.0 * n * double(n) * n * iters / (ms * 1e-3);
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 8192;
  const int iters = argc > 2 ? std::atoi(argv[2]) : 20;
  const size_t elems = size_t(n) * n;
  float *a, *b, *c;
  CHECK_CUDA(cudaMalloc(&a, elems * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&b, elems * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&c, elems * sizeof(float)));
  init<<<1024, 256>>>(a, elems, 1u);
  init<<<1024, 256>>>(b, elems, 2u);
  CHECK_CUDA(cudaGetLastError());
  cublasHandle_t h;
  CHECK_CUBLAS(cublasCreate(&h));
  CHECK_CUBLAS(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  const double fp32 = run(h, n, iters, a, b, c);
  CHECK_CUBLAS(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH));
  const double tf32 = run(h, n, iters, a, b, c);
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("{\"gpu\": \"%s\", \"n\": %d, \"iterations\": %d, \"fp32_flops\": %.6e, \"tf32_flops\": %.6e}\n",
              prop.name, n, iters, fp32, tf32);
  CHECK_CUBLAS(cublasDestroy(h));
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  CHECK_CUDA(cudaFree(c));
  return 0;
}
