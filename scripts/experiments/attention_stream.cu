// The decode step's attention alone: one query row of V4-Flash's shapes (64 heads of 512 dims, 64
// RoPE dims, window 128) over compact caches, for the three layer kinds (window only, CSA with 512
// selected entries, HCA over every entry) at 4K and at 1M tokens. A development experiment for
// the decode step (docs/cuda.md), not part of dsv4: each case runs after a 256 MiB write that
// empties L2 (the caches of a real step were written long before; q is written again after it)
// and is timed alone with events
// (median of 30), the combine of the split partials included. It prints a hash of the output
// bits, so that a variant of the kernel that keeps the summation order can be checked against
// the kept one in a build of a few files.
//   nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a -Isrc scripts/experiments/attention_stream.cu \
//     src/ops/attention.cu src/ops/attention_mma.cu src/ops/rope.cu src/ops/quant.cu src/cuda/launch.cu -o /tmp/as && /tmp/as
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "ops/cuda_ops.h"
#include "experiment.cuh"

using namespace dsv4::cuda;

namespace as {

// Random bytes: e4m3 codes of moderate size (no NaN codes), E8M0 scales near 2^-6, bf16 RoPE dims
// in [-1, 1).
__global__ void fill_rows(uint8_t* codes, int64_t ncodes, uint8_t* scales, int64_t nscales, uint16_t* rope,
                          int64_t nrope, uint32_t seed) {
  const int64_t n = max(ncodes, max(nscales, nrope));
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    if (i < ncodes) codes[i] = static_cast<uint8_t>(h & 0xB7u);  // exponent ≤ 6: |value| < 2
    if (i < nscales) scales[i] = static_cast<uint8_t>(119 + (h >> 8) % 4);
    if (i < nrope) rope[i] = static_cast<uint16_t>(0x3C00u | ((h >> 12) & 0x807Fu));  // ±[2^-7, 2^-6)·(1 + m)
  }
}

CacheRows rows_of(int64_t n, int N, int R, uint32_t seed) {
  CacheRows c;
  const int nblk = (N + 63) / 64;
  CK(cudaMalloc(&c.codes, n * N));
  CK(cudaMalloc(&c.scales, (n * nblk + 255) / 256 * 256));
  CK(cudaMalloc(&c.rope, n * R * 2));
  fill_rows<<<1024, 256>>>(c.codes, n * N, c.scales, n * nblk, reinterpret_cast<uint16_t*>(c.rope), n * R, seed);
  return c;
}

}  // namespace as

using namespace as;

int main() {
  constexpr int H = 64, Dh = 512, R = 64, W = 128, K = 512, trials = 30;
  constexpr int N = Dh - R;
  constexpr int64_t kMaxTokens = 1 << 20;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int64_t flush_vecs = (256ll << 20) / 16;
  uint4* flush = nullptr;
  CK(cudaMalloc(&flush, flush_vecs * 16));

  // One sequence's caches: the window ring and the compressed entries of an HCA layer at 1M (the
  // CSA layer's selection points into the same rows).
  LayerCache lc;
  lc.window = rows_of(W, N, R, 1);
  lc.entries = rows_of(kMaxTokens / 4, N, R, 2);
  LayerCache* dlc = nullptr;
  CK(cudaMalloc(&dlc, sizeof(LayerCache)));
  CK(cudaMemcpy(dlc, &lc, sizeof(LayerCache), cudaMemcpyHostToDevice));

  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> q(H * Dh), kv(Dh), sink(H), freqs(R / 2);
  for (float& v : q) v = nd(rng);
  for (float& v : kv) v = nd(rng);
  for (float& v : sink) v = nd(rng);
  for (int i = 0; i < R / 2; ++i) freqs[i] = std::pow(10000.0f, -2.0f * i / R);
  auto upload = [](const std::vector<float>& v) {
    float* d = nullptr;
    CK(cudaMalloc(&d, v.size() * 4));
    CK(cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
    return d;
  };
  float *dq = upload(q), *dq_src = upload(q), *dkv = upload(kv), *dsink = upload(sink), *dfreqs = upload(freqs);
  float *o = nullptr, *qs = nullptr;
  uint8_t* oq = nullptr;
  CK(cudaMalloc(&o, H * Dh * 4));
  CK(cudaMalloc(&oq, H * Dh));
  CK(cudaMalloc(&qs, H * Dh / 128 * 4));
  int32_t *slot = nullptr, *pos = nullptr, *sel = nullptr;
  SeqRows* seqs = nullptr;
  CK(cudaMalloc(&slot, 4));
  CK(cudaMalloc(&pos, 4));
  CK(cudaMalloc(&sel, K * 4));
  CK(cudaMalloc(&seqs, sizeof(SeqRows)));
  CK(cudaMemset(slot, 0, 4));

  Timer tm{s, flush, flush_vecs};
  std::printf("| layer | tokens | attended rows | us | output hash |\n|---|---|---|---|---|\n");
  for (int round = 0; round < 2; ++round)
    for (int m : {0, 4, 128})
      for (int64_t tokens : {int64_t{4096}, kMaxTokens}) {
        const int32_t p = static_cast<int32_t>(tokens - 1);
        const SeqRows seq{0, 1, p};
        CK(cudaMemcpy(pos, &p, 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(seqs, &seq, sizeof(SeqRows), cudaMemcpyHostToDevice));
        const int64_t count = m > 0 ? tokens / m : 0;
        if (m == 4) {  // K entries spread over the row, ascending (as the top-k gives them)
          std::vector<int32_t> picks(K);
          for (int i = 0; i < K; ++i) picks[i] = static_cast<int32_t>(i * count / K);
          CK(cudaMemcpy(sel, picks.data(), K * 4, cudaMemcpyHostToDevice));
        }
        AttnShape sh{H, Dh, R, W, m, K, 1.0f / std::sqrt(static_cast<float>(Dh)), true};
        sh.max_keys = static_cast<int>(W + (m == 4 ? std::min<int64_t>(K, tokens / 4) : m > 0 ? tokens / m : 0));
        sh.bf16_products = true;
        sh.q_rope = dfreqs;
        sh.q_eps = 1e-6f;
        const int64_t work_floats = std::max<int64_t>(1, sparse_attention_work(1, sh));
        float* work = nullptr;
        CK(cudaMalloc(&work, work_floats * 4));
        // The first call encodes the chunk's row into the work buffer; the timed ones find it there
        // (as the model's decode step does, its key kernel having encoded it).
        sparse_attention_cuda(dq, dkv, dsink, sh, slot, pos, 1, seqs, dlc, m == 4 ? sel : nullptr, o, work, s,
                              AttnOutput{dfreqs, oq, qs, true, false});
        // q is in L2 in the model (its projection wrote it just before): written again after the flush.
        const double us = tm.median(
            trials, [](int) {},
            [&] {
              sparse_attention_cuda(dq, dkv, dsink, sh, slot, pos, 1, seqs, dlc, m == 4 ? sel : nullptr, o, work, s,
                                    AttnOutput{dfreqs, oq, qs, true, true});
            },
            [&] { CK(cudaMemcpyAsync(dq, dq_src, q.size() * 4, cudaMemcpyDeviceToDevice, s)); });
        std::vector<uint32_t> bits(H * Dh);
        CK(cudaMemcpy(bits.data(), o, H * Dh * 4, cudaMemcpyDeviceToHost));
        std::printf("| %s | %lld | %lld | %.2f | %016llx |\n", m == 0 ? "window" : m == 4 ? "CSA" : "HCA",
                    static_cast<long long>(tokens), static_cast<long long>(std::min<int64_t>(p + 1, W) + (m == 4 ? std::min<int64_t>(K, count) : count)),
                    us, static_cast<unsigned long long>(fnv1a(bits)));
        CK(cudaFree(work));
      }
  return 0;
}
