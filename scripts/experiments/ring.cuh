// What the persistent-kernel experiments share (persistent_chain.cu, decode_frame.cu; not part of
// dsv4): the global timer, a spin of a set length, a grid barrier's counter, and the mbarriers of a
// ring of bulk copies.
#pragma once
#include <cstdint>

__device__ __forceinline__ unsigned long long globaltimer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)::"memory");
  return t;
}
// One thread: spin for t ns.
__device__ __forceinline__ void spin_for(long long t) {
  const unsigned long long t0 = globaltimer_ns();
  while (static_cast<long long>(globaltimer_ns() - t0) < t) {
  }
}

// A grid barrier's counter: a block adds one after its writes (release); a waiter reads it with
// acquire loads until it reaches the target.
__device__ __forceinline__ void release_add(unsigned* c) {
  asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(c) : "memory");
}
__device__ __forceinline__ void wait_count(const unsigned* c, unsigned target) {
  unsigned v;
  do {
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(c) : "memory");
  } while (v < target);
}

__device__ __forceinline__ uint32_t mbar_addr(const uint64_t* b) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(b));
}
__device__ __forceinline__ void mbar_init(uint64_t* b, uint32_t n) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(mbar_addr(b)), "r"(n) : "memory");
}
// Arrives and expects `bytes` of copies to complete the phase.
__device__ __forceinline__ void mbar_expect(uint64_t* b, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(mbar_addr(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* b) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(mbar_addr(b)) : "memory");
}
// Until the phase of the given parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* b, uint32_t parity) {
  asm volatile("{\n.reg .pred p;\nW:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n@!p bra W;\n}\n" ::"r"(
                   mbar_addr(b)),
               "r"(parity)
               : "memory");
}
