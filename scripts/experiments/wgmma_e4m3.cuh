// The FP8 wgmma of the experiments that feed one activation row as B's column 0
// (wgmma_fp8_consume.cu, decode_frame.cu); not part of dsv4. sm_90a.
#pragma once
#include <cstdint>

// d[64×8] (+)= a[64×32] · b[32×8], e4m3 → float32, both operands by descriptor; accumulate = false:
// d = a · b.
__device__ __forceinline__ void wgmma_m64n8k32_e4m3(float (&d)[4], uint64_t a, uint64_t b, bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3 {%0, %1, %2, %3}, %4, %5, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "l"(a), "l"(b), "r"(static_cast<uint32_t>(accumulate)));
}
