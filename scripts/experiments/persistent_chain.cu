// Can one persistent kernel hide a decode chain's latency under its weight streams? A development
// experiment for the batch-1 decode step (docs/cuda.md), not part of dsv4. A chain of L stages,
// each an FP8 product y = W x (D x D weights, streamed from HBM: L · D² bytes, far beyond L2) then an
// RMS normalization of y into the next stage's x, which needs all of y: the shape of the decode
// step, where each product waits for a small dependent step over the whole previous output.
//   kernels: a product kernel and a one-block norm kernel a stage, launched with PDL; a product
//            loads its first weights before its griddepcontrol.wait (dsv4's decode step today);
//            the norm releases the next product after its wait, or (early) before it, as dsv4's
//            short kernels do;
//   fused:   the product kernel normalizes the previous y itself, in every block (no norm launch);
//   persist: one cooperative kernel for the whole chain. Between stages a grid barrier (a counter:
//            each block arrives after its writes; thread 0 waits with acquire loads); each block
//            loads its first weights of the next stage before it waits, then normalizes the
//            previous y itself.
// Every variant computes the same bits (the same rows per warp, the same summation orders): the
// final x's hash is printed with each. The ceiling is one flat read of all the stages' weights.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/persistent_chain.cu \
//     -o /tmp/pc && /tmp/pc
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "experiment.cuh"

namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr float kEps = 1e-6f;

struct Chain {
  const uint8_t* w;  // [L][D][D] e4m3
  float* x0;         // [D], the first stage's input
  float* y;          // [L][D], each stage's output
  int D, L;
};

// A warp's rows of a stage: r = global warp, + all warps, ... A lane's 16-byte pieces of a row:
// lane + 32 j, D / 512 of them, all loaded at once.
constexpr int kMaxPieces = 8;  // D up to 4096
struct RowLoads {
  uint4 v[kMaxPieces];
};
__device__ __forceinline__ void load_row(const uint8_t* w, int D, int row, RowLoads& r) {
  const int lane = threadIdx.x & 31, pieces = D / 512;
  const uint4* p = reinterpret_cast<const uint4*>(w + static_cast<int64_t>(row) * D);
#pragma unroll
  for (int j = 0; j < kMaxPieces; ++j)
    if (j < pieces) asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                                 : "=r"(r.v[j].x), "=r"(r.v[j].y), "=r"(r.v[j].z), "=r"(r.v[j].w)
                                 : "l"(p + lane + 32 * j));
}
// x in shared memory, column 16 p + c at c · D/16 + p: the 32 lanes of a warp read 32 consecutive
// words for one c (no bank conflicts).
__device__ __forceinline__ int xidx(int i, int D) { return (i & 15) * (D >> 4) + (i >> 4); }

// Σ_k w[row][k] x[k] of a lane's pieces (16 e4m3 each, in order), then over the warp.
__device__ __forceinline__ float dot_row(const RowLoads& r, const float* xs, int D) {
  const int lane = threadIdx.x & 31, pieces = D / 512, d16 = D >> 4;
  float acc = 0.0f;
#pragma unroll
  for (int j = 0; j < kMaxPieces; ++j) {
    if (j >= pieces) break;
    const uint32_t w4[4] = {r.v[j].x, r.v[j].y, r.v[j].z, r.v[j].w};
    const float* x = xs + lane + 32 * j;  // + c · d16: column 16 (lane + 32 j) + c
#pragma unroll
    for (int q = 0; q < 4; ++q)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const auto pair = static_cast<__nv_fp8x2_storage_t>(w4[q] >> (16 * h));
        const __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
        const float2 f = __half22float2(__half2(hr));
        acc = fmaf(f.x, x[(4 * q + 2 * h) * d16], acc);
        acc = fmaf(f.y, x[(4 * q + 2 * h + 1) * d16], acc);
      }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  return acc;
}

// x = y / rms(y) into shared memory (at xidx), by the whole block: thread t adds y[t + 256 i]² in
// i order, then the warps' sums in warp order (every block computes the same bits).
__device__ __forceinline__ void normalize_into(const float* y, int D, float* xs, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < D; i += kThreads) {
    const float v = __ldcg(y + i);
    xs[xidx(i, D)] = v;
    ss = fmaf(v, v, ss);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (lane == 0) red[warp] = ss;
  __syncthreads();
  float tot = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) tot += red[w];
  const float inv = 1.0f / sqrtf(tot / static_cast<float>(D) + kEps);
  __syncthreads();  // every thread has read red before it is reused
  for (int i = threadIdx.x; i < D; i += kThreads) xs[i] *= inv;
  __syncthreads();
}
__device__ __forceinline__ void copy_into(const float* x, int D, float* xs) {
  for (int i = threadIdx.x; i < D; i += kThreads) xs[xidx(i, D)] = __ldcg(x + i);
  __syncthreads();
}

// The rows of stage i for this block's warps, the next row's loads in flight during each row's
// arithmetic; the first row's are already in r (loaded before the wait).
__device__ __forceinline__ void stage_rows(const Chain& c, int i, const float* xs, RowLoads& r) {
  const int lane = threadIdx.x & 31;
  const int gw = blockIdx.x * kWarps + (threadIdx.x >> 5), nw = gridDim.x * kWarps;
  const uint8_t* w = c.w + static_cast<int64_t>(i) * c.D * c.D;
  float* y = c.y + static_cast<int64_t>(i) * c.D;
  RowLoads next;
  for (int row = gw; row < c.D; row += nw) {
    if (row + nw < c.D) load_row(w, c.D, row + nw, next);
    const float v = dot_row(r, xs, c.D);
    if (lane == 0) y[row] = v;
    r = next;
  }
}

// ---- kernels -------------------------------------------------------------------------------------
__global__ void __launch_bounds__(kThreads) product_kernel(Chain c, int i, bool fused_norm) {
  extern __shared__ float xs[];
  __shared__ float red[kWarps];
  RowLoads r;
  const int gw = blockIdx.x * kWarps + (threadIdx.x >> 5);
  if (gw < c.D) load_row(c.w + static_cast<int64_t>(i) * c.D * c.D, c.D, gw, r);  // weights: before the wait
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;");
  if (i == 0) copy_into(c.x0, c.D, xs);
  else if (fused_norm) normalize_into(c.y + static_cast<int64_t>(i - 1) * c.D, c.D, xs, red);
  else copy_into(c.y + static_cast<int64_t>(c.L) * c.D, c.D, xs);  // norm_kernel's x
  stage_rows(c, i, xs, r);
}
// x for stage i + 1 (kept after the L outputs: c.y[L]) from y_i, one block. early: it lets the next
// product launch before its own wait (dsv4's short kernels, pdl_begin_early), so that product's
// blocks are scheduled and load their first weights while this kernel waits.
__global__ void __launch_bounds__(kThreads) norm_kernel(Chain c, int i, bool early) {
  extern __shared__ float xs[];
  __shared__ float red[kWarps];
  if (early) asm volatile("griddepcontrol.launch_dependents;");
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (!early) asm volatile("griddepcontrol.launch_dependents;");
  normalize_into(c.y + static_cast<int64_t>(i) * c.D, c.D, xs, red);
  float* xn = c.y + static_cast<int64_t>(c.L) * c.D;
  for (int k = threadIdx.x; k < c.D; k += kThreads) xn[k] = xs[xidx(k, c.D)];
}

// The whole chain in one cooperative grid; `arrived` counts blocks done with each stage.
__global__ void __launch_bounds__(kThreads) persistent_kernel(Chain c, unsigned* arrived) {
  extern __shared__ float xs[];
  __shared__ float red[kWarps];
  const int gw = blockIdx.x * kWarps + (threadIdx.x >> 5);
  for (int i = 0; i < c.L; ++i) {
    RowLoads r;
    if (gw < c.D) load_row(c.w + static_cast<int64_t>(i) * c.D * c.D, c.D, gw, r);  // before the barrier
    if (i == 0) {
      copy_into(c.x0, c.D, xs);
    } else {
      if (threadIdx.x == 0) {
        const unsigned target = static_cast<unsigned>(i) * gridDim.x;
        unsigned v;
        do {
          asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(arrived) : "memory");
        } while (v < target);
      }
      __syncthreads();
      normalize_into(c.y + static_cast<int64_t>(i - 1) * c.D, c.D, xs, red);
    }
    stage_rows(c, i, xs, r);
    __syncthreads();  // the block's rows are written
    if (threadIdx.x == 0) {
      __threadfence();
      atomicAdd(arrived, 1u);
    }
  }
}

// One flat read of n 16-byte vectors (the ceiling for the chain's bytes).
__global__ void __launch_bounds__(kThreads) flat_read(const uint4* p, int64_t n, uint32_t* sink) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p + i));
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

__global__ void fill_e4m3(uint8_t* w, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    // magnitudes 2^-9 .. 2^-3 (exponent fields 0..6 above the bias's -7), either sign: no NaN codes
    w[i] = static_cast<uint8_t>((h & 0x80u) | ((h >> 8) % 7u) << 3 | (h >> 16 & 7u));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int D = argc > 1 ? std::atoi(argv[1]) : 4096, L = argc > 2 ? std::atoi(argv[2]) : 20;
  if (D % 512 != 0 || D > 512 * kMaxPieces || L < 1) {
    std::printf("usage: pc [D (a multiple of 512, at most %d)] [stages]\n", 512 * kMaxPieces);
    return 2;
  }
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t smem = static_cast<size_t>(D) * sizeof(float);
  CK(cudaFuncSetAttribute(product_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  CK(cudaFuncSetAttribute(norm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  CK(cudaFuncSetAttribute(persistent_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int per_sm = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_kernel, kThreads, smem));
  const int blocks = sms * std::min(per_sm, 2);  // dsv4's FP8 products: 2 blocks an SM
  const int64_t wbytes = static_cast<int64_t>(L) * D * D;
  uint8_t* w;
  float *x0, *y;
  unsigned* arrived;
  uint32_t* sink;
  CK(cudaMalloc(&w, wbytes));
  CK(cudaMalloc(&x0, D * sizeof(float)));
  CK(cudaMalloc(&y, static_cast<size_t>(L + 1) * D * sizeof(float)));
  CK(cudaMalloc(&arrived, sizeof(unsigned)));
  CK(cudaMalloc(&sink, sizeof(uint32_t)));
  fill_e4m3<<<1024, 256>>>(w, wbytes, 17);
  {
    std::vector<float> h(D);
    for (int k = 0; k < D; ++k) h[k] = 0.5f + static_cast<float>((k * 37) % 101) / 101.0f;
    CK(cudaMemcpy(x0, h.data(), D * sizeof(float), cudaMemcpyHostToDevice));
  }
  const Chain c{w, x0, y, D, L};
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Timer tm{s, nullptr, (256ll << 20) / 16};
  CK(cudaMalloc(&tm.flush, tm.flush_vecs * 16));

  auto kernels = [&](bool fused, bool early) {
    for (int i = 0; i < L; ++i) {
      launch_pdl(product_kernel, blocks, kThreads, smem, s, c, i, fused);
      if (!fused && i + 1 < L) launch_pdl(norm_kernel, 1, kThreads, smem, s, c, i, early);
    }
  };
  auto persist = [&] {
    CK(cudaMemsetAsync(arrived, 0, sizeof(unsigned), s));
    Chain cc = c;
    unsigned* a = arrived;
    void* args[] = {&cc, &a};
    CK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(persistent_kernel), dim3(blocks), dim3(kThreads),
                                   args, smem, s));
  };
  auto final_hash = [&] {
    CK(cudaStreamSynchronize(s));
    std::vector<uint32_t> h(D);
    CK(cudaMemcpy(h.data(), y + static_cast<int64_t>(L - 1) * D, D * 4, cudaMemcpyDeviceToHost));
    return static_cast<unsigned long long>(fnv1a(h));
  };
  const int trials = 15;
  const double mb = wbytes / 1e6;
  std::printf("chain of %d stages, %d x %d FP8 weights each (%.1f MB in all), %d blocks of %d threads\n", L, D, D, mb,
              blocks, kThreads);
  const double ceil_us = tm.median(trials, [](int) {}, [&] {
    flat_read<<<blocks * 2, kThreads, 0, s>>>(reinterpret_cast<const uint4*>(w), wbytes / 16, sink);
  });
  std::printf("| variant | us | us a stage | GB/s | final y hash |\n|---|---|---|---|---|\n");
  std::printf("| one flat read of the bytes | %.1f | %.2f | %.0f | |\n", ceil_us, ceil_us / L, mb * 1e3 / ceil_us);
  for (int round = 0; round < 2; ++round) {
    struct V {
      const char* name;
      std::function<void()> run;
    };
    for (const V& v : {V{"kernels: product + norm launches, PDL", [&] { kernels(false, false); }},
                       V{"kernels, the norm releasing the next product before its wait", [&] { kernels(false, true); }},
                       V{"fused: the norm in every product block, PDL", [&] { kernels(true, false); }},
                       V{"persist: one cooperative kernel, grid barriers", persist}}) {
      const double us = tm.median(trials, [](int) {}, v.run);
      std::printf("| %s | %.1f | %.2f | %.0f | %016llx |\n", v.name, us, us / L, mb * 1e3 / us, final_hash());
    }
  }
  return 0;
}
