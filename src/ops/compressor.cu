// CUDA compressor (contract in compressor.h / cuda_ops.h), fused per entry: softmax pooling
// over the block's rows (§6), RMSNorm, RoPE at the block's first position, quantization
// (FP8 on the nope dims, or Hadamard + FP4 for the indexer) and the cache write.
#include <algorithm>

#include "cuda/check.h"
#include "cuda/launch.h"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

constexpr int kThreads = 256;

// Indexer row: FP4 simulation in blocks of 32 (one warp per block), float32 or packed codes.
__device__ void write_indexer_row(float* e, const RowFormat& f, const CacheRows& c, int64_t row) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int b = warp; b < f.d / 32; b += nwarps) {
    const float x = e[b * 32 + lane];
    const float amax = dev::warp_max(fabsf(x));
    const int k = dev::fp4_scale_exp(amax);
    const float s = ldexpf(1.0f, k);
    const float v = dev::fp4_sim_value(x, s);
    if (!f.compact) {
      c.f32[row * f.d + b * 32 + lane] = v;
      continue;
    }
    const uint8_t code = dev::e2m1_code(v / s);
    const uint8_t hi = static_cast<uint8_t>(__shfl_down_sync(0xffffffffu, code, 1));
    if ((lane & 1) == 0) c.codes[row * (f.d / 2) + (b * 32 + lane) / 2] = static_cast<uint8_t>(code | (hi << 4));
    if (lane == 0) c.scales[row * (f.d / 32) + b] = static_cast<uint8_t>(k + 127);
  }
}

__global__ void compress_entries_kernel(const float* u, const float* z, const float* ape, int m, RowFormat f,
                                        const float* norm, float eps, const float* freqs, const CompressJob* jobs,
                                        const int32_t* njobs, const SeqRows* seqs, const LayerCache* caches, int which) {
  extern __shared__ float e[];
  __shared__ float scratch[33];
  // Before the wait: the job, its sequence's rows and cache pointers (the batch descriptor, no
  // earlier kernel's output: launch.h) and the angle of the thread's first RoPE pair.
  if (static_cast<int>(blockIdx.x) >= *njobs) return;
  const CompressJob job = jobs[blockIdx.x];
  const SeqRows seq = seqs[job.slot];
  const LayerCache& cache = caches[job.slot];
  const bool overlap = m == 4;
  const int d = f.d, width = (overlap ? 2 : 1) * d, ring_rows = overlap ? 2 * m : m;
  const float* ring_u = which ? cache.idx_u : cache.comp_u;
  const float* ring_z = which ? cache.idx_z : cache.comp_z;
  const CacheRows out_rows = f.indexer ? cache.idx_entries : cache.entries;
  const int i = job.entry;
  const dev::RopeAngle first = dev::rope_first_angle(freqs, f.R, i * m);
  dev::pdl_begin();
  auto row_of = [&](const float* chunk, const float* ring, int p) {
    return p >= seq.pos0 ? chunk + static_cast<int64_t>(seq.row0 + p - seq.pos0) * width
                         : ring + static_cast<int64_t>(p % ring_rows) * width;
  };
  // z at position p, column c: the chunk's rows get their ape here (one rounding of z + ape); the
  // ring's already have it.
  auto z_at = [&](int p, int c) {
    return p >= seq.pos0 ? z[static_cast<int64_t>(seq.row0 + p - seq.pos0) * width + c] + ape[(p % m) * width + c]
                         : ring_z[static_cast<int64_t>(p % ring_rows) * width + c];
  };
  const bool has_prev = overlap && i > 0;
  for (int feat = threadIdx.x; feat < d; feat += blockDim.x) {
    const int cf = overlap ? d + feat : feat;
    float mx = -INFINITY;
    for (int r = 0; r < m; ++r) mx = fmaxf(mx, z_at(i * m + r, cf));
    if (has_prev)
      for (int r = 0; r < m; ++r) mx = fmaxf(mx, z_at((i - 1) * m + r, feat));
    float num = 0.0f, den = 0.0f;
    if (has_prev)
      for (int r = 0; r < m; ++r) {
        const int p = (i - 1) * m + r;
        const float w = expf(z_at(p, feat) - mx);
        den += w;
        num += w * row_of(u, ring_u, p)[feat];
      }
    for (int r = 0; r < m; ++r) {
      const int p = i * m + r;
      const float w = expf(z_at(p, cf) - mx);
      den += w;
      num += w * row_of(u, ring_u, p)[cf];
    }
    e[feat] = num / den;
  }
  float ss = 0.0f;
  for (int feat = threadIdx.x; feat < d; feat += blockDim.x) ss += e[feat] * e[feat];
  ss = dev::block_sum(ss, scratch);  // (synchronizes)
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  for (int feat = threadIdx.x; feat < d; feat += blockDim.x) e[feat] = norm[feat] * (e[feat] * inv);
  __syncthreads();
  dev::rope_pairs(e + d - f.R, freqs, f.R, i * m, first);
  __syncthreads();
  if (!f.indexer) {
    dev::write_kv_row(e, f, out_rows, i);
    return;
  }
  // Hadamard rotation of all d dims (the CPU's butterfly order), then FP4.
  dev::hadamard_butterflies(e, d);
  const float hs = static_cast<float>(1.0 / sqrt(static_cast<double>(d)));
  for (int feat = threadIdx.x; feat < d; feat += blockDim.x) e[feat] *= hs;
  __syncthreads();
  write_indexer_row(e, f, out_rows, i);
}

__global__ void compressor_keep_kernel(const float* u, const float* z, const float* ape, int m, int width,
                                       int ring_rows, const SeqRows* seqs, const LayerCache* caches, int which) {
  // The sequence's rows and ring pointers before the wait: the batch descriptor (launch.h). Block y
  // keeps row T − gridDim.y + y of the chunk (gridDim.y = min(ring_rows, the longest chunk)).
  const SeqRows seq = seqs[blockIdx.x];
  const int p = seq.pos0 + seq.T - static_cast<int>(gridDim.y) + static_cast<int>(blockIdx.y);
  if (p < seq.pos0 || p < 0) return;
  const LayerCache& cache = caches[blockIdx.x];
  float* ru = (which ? cache.idx_u : cache.comp_u) + static_cast<int64_t>(p % ring_rows) * width;
  float* rz = (which ? cache.idx_z : cache.comp_z) + static_cast<int64_t>(p % ring_rows) * width;
  dev::pdl_begin();
  const int64_t src = static_cast<int64_t>(seq.row0 + p - seq.pos0) * width;
  const float* ape_p = ape + static_cast<int64_t>(p % m) * width;
  for (int j = threadIdx.x; j < width; j += blockDim.x) {
    ru[j] = u[src + j];
    rz[j] = z[src + j] + ape_p[j];
  }
}

}  // namespace

void compress_entries_cuda(const float* u, const float* z, const float* ape, int m, RowFormat f, const float* norm,
                           float eps, const float* freqs, const CompressJob* jobs, const int32_t* njobs, int max_jobs,
                           const SeqRows* seqs, const LayerCache* caches, int which, cudaStream_t s) {
  if (max_jobs == 0) return;
  DSV4_CHECK(!f.indexer || (f.d % 32 == 0 && (f.d & (f.d - 1)) == 0), "compressor", "indexer width ", f.d,
             " must be a power of two (Hadamard) and a multiple of 32");
  launch("compress_entries_kernel", compress_entries_kernel, max_jobs, kThreads, f.d * sizeof(float), s, u, z, ape, m,
         f, norm, eps, freqs, jobs, njobs, seqs, caches, which);
}

void compressor_keep_cuda(const float* u, const float* z, const float* ape, int m, int width, int ring_rows,
                          const SeqRows* seqs, int nseq, int max_rows, const LayerCache* caches, int which,
                          cudaStream_t s) {
  if (nseq == 0 || max_rows <= 0) return;
  // A block per row kept: a decode step keeps one row a sequence. It launched ring_rows blocks (128
  // in an HCA layer), which waited for free SMs behind the products: 10 µs for one row's copy in a
  // trace. The step takes as long either way (bench/results/2026-11-30-cuda-28.md).
  launch("compressor_keep_kernel", compressor_keep_kernel, dim3(nseq, std::min(ring_rows, max_rows)), 128, 0, s, u, z,
         ape, m, width, ring_rows, seqs, caches, which);
}

}  // namespace dsv4::cuda
