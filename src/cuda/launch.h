// Kernel launches with programmatic dependent launch (PDL, Hopper): the next kernel in the
// stream may start while this one finishes, so its launch, its block scheduling and any work
// that needs no earlier result (a product's first weight loads) overlap the previous kernel's
// tail instead of following it. A decode step is ~45 dependent kernels per layer, most of them
// a few microseconds long; the gap between two of them is what PDL removes.
//
// The contract, for every kernel started by cuda::launch:
//   * it calls dev::pdl_wait() before it reads anything an earlier kernel of the stream wrote
//     and before it writes anything (an earlier kernel may still be reading it); what comes
//     before the wait may only read data no kernel of the stream writes: weights, and a forward
//     step's batch descriptor (positions, slots, sequence rows, the table of cache pointers, not
//     the caches), which the host copies in ahead of the step's first kernel;
//   * it calls dev::pdl_release() after its wait (dev::pdl_begin() does both), so the kernel
//     after it is launched at most one kernel ahead and its wait orders it after this one; a
//     short kernel may release first (dev::pdl_begin_early()), its next kernel then launched two
//     ahead.
// griddepcontrol.wait returns once every prerequisite grid has completed and its memory is
// visible; in a kernel launched without PDL both instructions do nothing.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "cuda/check.h"

namespace dsv4::cuda {

// PDL on (the default) or off for launches from now on (DSV4_PDL=0 in the environment starts
// with it off). Graphs keep what they were captured with.
bool pdl_enabled();
void set_pdl(bool on);

// The launch attributes of a kernel on stream s: PDL when enabled, and the stream's priority when
// it has one (so that a graph captured from the stream keeps it on the kernel's node). Returns
// how many of attr[0..1] it set.
int launch_attributes(cudaStream_t s, cudaLaunchAttribute (&attr)[2]);
// The same after a first attribute for clusters of `cluster` blocks (x): attr[0..2], returns the count.
int launch_attributes(cudaStream_t s, unsigned cluster, cudaLaunchAttribute (&attr)[3]);

// kernel<<<grid, block, smem, s>>>(args...) with launch_attributes; a launch error names the kernel.
template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
            Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[2];
  cfg.attrs = attr;
  cfg.numAttrs = static_cast<unsigned>(launch_attributes(s, attr));
  check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), name, __FILE__, __LINE__);
}

namespace dev {

// Waits until the kernels this one depends on have completed and their writes are visible.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
// Lets the next kernel of the stream be launched (it still waits for this one to complete).
__device__ __forceinline__ void pdl_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// The start of a kernel with nothing to do before its inputs are ready.
__device__ __forceinline__ void pdl_begin() {
  pdl_wait();
  pdl_release();
}
// The start of a short kernel between two products (a norm, a quantization, a combine, mHC): it
// lets the next kernel launch before its own wait, so that product is scheduled and loads its first
// weights while this kernel still waits for the one before it (the kernel after this one is then
// launched two kernels ahead; its wait still orders it after this one, which completes only after
// the one before it). B=1 4K 3.01 -> 2.97 ms with the down products' early routing reads
// (bench/results/2026-11-30-cuda-16.md).
__device__ __forceinline__ void pdl_begin_early() {
  pdl_release();
  pdl_wait();
}

}  // namespace dev
}  // namespace dsv4::cuda
