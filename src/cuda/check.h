// Error checking for every CUDA runtime and cuBLAS(Lt) call: a failure becomes a
// dsv4::Error naming the call, the error and the source line.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "core/error.h"

namespace dsv4::cuda {

inline void check(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess)
    throw Error("cuda", str(call, " failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") at ", file, ":",
                            line));
}
inline void check(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error("cublas", str(call, " failed: status ", static_cast<int>(s), " at ", file, ":", line));
}

// A usable device, or an error that says what is missing and what to do instead (`instead`).
inline void require_device(const char* instead) {
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0)
    throw Error("cuda", str("no usable CUDA device (", e != cudaSuccess ? cudaGetErrorString(e) : "none found", ")",
                            instead));
}

}  // namespace dsv4::cuda

// DSV4_CUDA_CHECK(cudaMalloc(...)); DSV4_CUDA_CHECK(cublasLtMatmul(...));
#define DSV4_CUDA_CHECK(call) ::dsv4::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: the launch error (bad configuration, no kernel image) with the kernel's name.
#define DSV4_CUDA_LAUNCHED(name) ::dsv4::cuda::check(cudaGetLastError(), "launch of " name, __FILE__, __LINE__)
