// CUDA compressor (contract in compressor.h / cuda_ops.h), fused per entry: softmax pooling
// over the block's rows (§6), RMSNorm, RoPE at the block's first position, quantization
// (FP8 on the nope dims, or Hadamard + FP4 for the indexer) and the cache write.
#include <algorithm>
#include <type_traits>

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

// One row of an entry's pool: where its u and z start (chunk or ring), the chunk's ape row (null
// for ring rows, which keep z with ape added) and the column offset of its half.
struct PoolRow {
  const float* u;
  const float* z;
  const float* ape;
  int col;
};
// Rows whose loads a thread issues together, all global loads issued before any is used. The
// pooling once waited a round trip or more per row: a CSA layer's entry took ~27 µs on its one
// block, on the attention's critical path in the steps that complete an entry. By globaltimer
// stamps its pooling now takes ~3.7 µs, the kernel ~7.5 (bench/results/2026-12-01-cuda-33.md).
constexpr int kPoolBatch = 16, kPoolFeats = 2;
static_assert(kPoolBatch <= 32, "a batch's chunk rows are bits of one word");
__host__ __device__ inline size_t pool_rows(int m) { return static_cast<size_t>(m == 4 ? 2 * m : m); }
// Dynamic shared memory: the entry [d] (float), then the pool's rows.
__host__ __device__ inline size_t entries_smem(int d, int m) {
  constexpr size_t kAlign = alignof(PoolRow);
  const size_t e = (static_cast<size_t>(d) * sizeof(float) + kAlign - 1) / kAlign * kAlign;
  return e + pool_rows(m) * sizeof(PoolRow);
}

__global__ void compress_entries_kernel(const float* u, const float* z, const float* ape, int m, RowFormat f,
                                        const float* norm, float eps, const float* freqs, const CompressJob* jobs,
                                        const int32_t* njobs, const SeqRows* seqs, const LayerCache* caches, int which) {
  extern __shared__ float e[];
  __shared__ float scratch[33];
  // Before the wait: the job, its sequence's rows and cache pointers (the batch descriptor, no
  // earlier kernel's output: launch.h), the pool's row addresses and the angle of the thread's
  // first RoPE pair.
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
  // The pool in summation order: the previous block's rows (overlap, i > 0: the first half of the
  // columns), then this block's (overlap: the second half). Chunk rows have their ape added where
  // read (one rounding of z + ape); the ring's already have it.
  const bool has_prev = overlap && i > 0;
  const int nprev = has_prev ? m : 0, nrows = nprev + m;
  PoolRow* rows = reinterpret_cast<PoolRow*>(reinterpret_cast<unsigned char*>(e) + entries_smem(d, m) -
                                             pool_rows(m) * sizeof(PoolRow));
  for (int r = threadIdx.x; r < nrows; r += blockDim.x) {
    const int p = r < nprev ? (i - 1) * m + r : i * m + (r - nprev);
    const bool chunk = p >= seq.pos0;
    const int64_t off = chunk ? static_cast<int64_t>(seq.row0 + p - seq.pos0) * width
                              : static_cast<int64_t>(p % ring_rows) * width;
    rows[r] = PoolRow{(chunk ? u : ring_u) + off, (chunk ? z : ring_z) + off,
                      chunk ? ape + static_cast<int64_t>(p % m) * width : nullptr, r < nprev || !overlap ? 0 : d};
  }
  const dev::RopeAngle first = dev::rope_first_angle(freqs, f.R, i * m);
  float norm_r[kPoolFeats];  // the norm's weights of the thread's first features, read before the wait
#pragma unroll
  for (int q = 0; q < kPoolFeats; ++q) {
    const int feat = static_cast<int>(threadIdx.x) + q * static_cast<int>(blockDim.x);
    norm_r[q] = feat < d ? norm[feat] : 0.0f;
  }
  __syncthreads();
  dev::pdl_begin();
  // A batch of rows' loads (global, all issued before any is used): z (and ape for chunk rows,
  // added after the batch's loads) and, with kU, u; rows r0 .. r0 + kPoolBatch - 1 of the
  // features f0 + q·blockDim.
  auto load_batch = [&](auto kU, int r0, int f0, float (&zv)[kPoolFeats][kPoolBatch],
                        float (&uv)[kPoolFeats][kPoolBatch]) {
    float av[kPoolFeats][kPoolBatch];
    uint32_t chunk_rows = 0;
#pragma unroll
    for (int j = 0; j < kPoolBatch; ++j)
      if (r0 + j < nrows) {
        const PoolRow pr = rows[r0 + j];
        if (pr.ape) chunk_rows |= 1u << j;
#pragma unroll
        for (int q = 0; q < kPoolFeats; ++q) {
          const int c = pr.col + f0 + q * static_cast<int>(blockDim.x);
          if (f0 + q * static_cast<int>(blockDim.x) >= d) continue;
          zv[q][j] = __ldcg(pr.z + c);
          av[q][j] = pr.ape ? __ldg(pr.ape + c) : 0.0f;
          if (decltype(kU)::value) uv[q][j] = __ldcg(pr.u + c);
        }
      }
#pragma unroll
    for (int j = 0; j < kPoolBatch; ++j)
#pragma unroll
      for (int q = 0; q < kPoolFeats; ++q)
        if ((chunk_rows >> j) & 1u) zv[q][j] += av[q][j];
  };
  using WithU = std::true_type;
  using NoU = std::false_type;
  // e[feat] = Σ_r softmax_r(z[r][feat]) · u[r][feat] over the pool, in row order. A thread takes
  // kPoolFeats features at once; a pool of at most kPoolBatch rows is read whole (one round trip
  // for all its loads), a longer one in batches, twice (its maximum first). A feature slot past d
  // is neither loaded nor stored (its sums are discarded; guarding them cost 26 registers).
  for (int f0 = threadIdx.x; f0 < d; f0 += kPoolFeats * blockDim.x) {
    float mx[kPoolFeats], num[kPoolFeats], den[kPoolFeats];
#pragma unroll
    for (int q = 0; q < kPoolFeats; ++q) mx[q] = -INFINITY, num[q] = 0.0f, den[q] = 0.0f;
    auto feat_of = [&](int q) { return f0 + q * static_cast<int>(blockDim.x); };
    auto add_batch = [&](int r0, const float (&zv)[kPoolFeats][kPoolBatch], const float (&uv)[kPoolFeats][kPoolBatch]) {
#pragma unroll
      for (int q = 0; q < kPoolFeats; ++q)
#pragma unroll
        for (int j = 0; j < kPoolBatch; ++j)
          if (r0 + j < nrows) {
            const float w = expf(zv[q][j] - mx[q]);
            den[q] += w;
            num[q] += w * uv[q][j];
          }
    };
    auto max_batch = [&](int r0, const float (&zv)[kPoolFeats][kPoolBatch]) {
#pragma unroll
      for (int q = 0; q < kPoolFeats; ++q)
#pragma unroll
        for (int j = 0; j < kPoolBatch; ++j)
          if (r0 + j < nrows) mx[q] = fmaxf(mx[q], zv[q][j]);
    };
    float zv[kPoolFeats][kPoolBatch], uv[kPoolFeats][kPoolBatch];
    if (nrows <= kPoolBatch) {
      load_batch(WithU{}, 0, f0, zv, uv);
      max_batch(0, zv);
      add_batch(0, zv, uv);
    } else {
      for (int r0 = 0; r0 < nrows; r0 += kPoolBatch) {
        load_batch(NoU{}, r0, f0, zv, uv);
        max_batch(r0, zv);
      }
      for (int r0 = 0; r0 < nrows; r0 += kPoolBatch) {
        load_batch(WithU{}, r0, f0, zv, uv);
        add_batch(r0, zv, uv);
      }
    }
#pragma unroll
    for (int q = 0; q < kPoolFeats; ++q)
      if (feat_of(q) < d) e[feat_of(q)] = num[q] / den[q];
  }
  float ss = 0.0f;
  for (int feat = threadIdx.x; feat < d; feat += blockDim.x) ss += e[feat] * e[feat];
  ss = dev::block_sum(ss, scratch);  // (synchronizes)
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(d) + eps);
  for (int feat = threadIdx.x, q = 0; feat < d; feat += blockDim.x, ++q)
    e[feat] = (q < kPoolFeats ? norm_r[q] : norm[feat]) * (e[feat] * inv);
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
  // A batch of loads in flight, then their stores (as one loop, each pair waited a round trip:
  // the compiler cannot move loads above stores that may alias them).
  constexpr int kBatch = 8;
  for (int j0 = threadIdx.x; j0 < width; j0 += kBatch * blockDim.x) {
    float uv[kBatch], zv[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int j = j0 + b * blockDim.x;
      if (j < width) uv[b] = u[src + j], zv[b] = z[src + j] + ape_p[j];
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int j = j0 + b * blockDim.x;
      if (j < width) ru[j] = uv[b], rz[j] = zv[b];
    }
  }
}

}  // namespace

void compress_entries_cuda(const float* u, const float* z, const float* ape, int m, RowFormat f, const float* norm,
                           float eps, const float* freqs, const CompressJob* jobs, const int32_t* njobs, int max_jobs,
                           const SeqRows* seqs, const LayerCache* caches, int which, cudaStream_t s) {
  if (max_jobs == 0) return;
  DSV4_CHECK(entries_smem(f.d, m) <= 48 * 1024, "compressor", "an entry of ", f.d, " dims pooled over ", pool_rows(m),
             " rows needs more than 48 KB of shared memory");
  DSV4_CHECK(!f.indexer || (f.d % 32 == 0 && (f.d & (f.d - 1)) == 0), "compressor", "indexer width ", f.d,
             " must be a power of two (Hadamard) and a multiple of 32");
  launch("compress_entries_kernel", compress_entries_kernel, max_jobs, kThreads, entries_smem(f.d, m), s, u, z, ape, m,
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
