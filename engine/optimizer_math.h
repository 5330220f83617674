// The optimizers' element rules, written once for both backends: the CPU backend calls them in its
// loops, the CUDA backend in its kernels (they are __host__ __device__ under nvcc). Every operation
// is rounded on its own, as written: on the GPU through the _rn intrinsics (nvcc would otherwise
// fuse a multiply and an add into one FMA), on the CPU because ISO C++ mode does not contract
// (-std=c++17, no -ffp-contract=fast), so both backends compute the same bits. Keras's rules:
//   SGD         w -= lr * g
//   momentum    v = momentum * v - lr * g;  w += v                       (Keras's velocity form)
//   Nesterov    v = momentum * v - lr * g;  w += momentum * v - lr * g
//   Adam        m += (g - m) * (1 - beta1);  v += (g*g - v) * (1 - beta2);
//               w -= alpha * m / (sqrt(v) + epsilon),  alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define TANDEM_HOST_DEVICE __host__ __device__
#else
#define TANDEM_HOST_DEVICE
#endif

namespace tandem::optimizer_math {

TANDEM_HOST_DEVICE inline float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
TANDEM_HOST_DEVICE inline float sub(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
TANDEM_HOST_DEVICE inline float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
TANDEM_HOST_DEVICE inline float div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
TANDEM_HOST_DEVICE inline float sqrt_rn(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

TANDEM_HOST_DEVICE inline void sgd(float lr, float& w, float g) { w = sub(w, mul(lr, g)); }

TANDEM_HOST_DEVICE inline void sgd_momentum(float lr, float momentum, bool nesterov, float& w, float g, float& velocity) {
  const float lg = mul(lr, g);
  const float v = sub(mul(momentum, velocity), lg);
  velocity = v;
  w = add(w, nesterov ? sub(mul(momentum, v), lg) : v);
}

// `one_minus_beta1` = 1 - beta1 and `one_minus_beta2` = 1 - beta2, rounded once by the caller.
TANDEM_HOST_DEVICE inline void adam(float alpha, float one_minus_beta1, float one_minus_beta2, float epsilon, float& w,
                                    float g, float& m, float& v) {
  m = add(m, mul(sub(g, m), one_minus_beta1));
  v = add(v, mul(sub(mul(g, g), v), one_minus_beta2));
  w = sub(w, div(mul(alpha, m), add(sqrt_rn(v), epsilon)));
}

// Adam's bias-corrected step size for update number `step` (1-based), in double on the host.
inline float adam_step_size(double lr, double beta1, double beta2, int64_t step) {
  const double b1t = 1.0 - std::pow(beta1, double(step));
  const double b2t = 1.0 - std::pow(beta2, double(step));
  return static_cast<float>(lr * std::sqrt(b2t) / b1t);
}

}  // namespace tandem::optimizer_math
