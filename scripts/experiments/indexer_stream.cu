// The lightning indexer's decode work alone: the scores kernel and the top-k over one row of a
// sequence at 4K and at 1M tokens (262,144 compressed entries), V4-Flash shapes (64 heads of 128
// dims, compact FP4 entries, K = 512). A development experiment for the 1M/4K ratio of the
// decode step (docs/cuda.md), not part of dsv4: each case runs after a 256 MiB write that empties
// L2 (the entries of a real step were written long before) and is timed alone with events
// (median of 30), so a variant of either kernel can be tried in a build of a few files.
//   nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a -Isrc scripts/experiments/indexer_stream.cu \
//     src/ops/indexer.cu src/ops/indexer_prefill.cu src/ops/indexer_wgmma.cu src/ops/topk.cu src/cuda/launch.cu \
//     -o /tmp/is && /tmp/is
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "ops/cuda_ops.h"
#include "experiment.cuh"

using namespace dsv4::cuda;

namespace is {

// Random FP4 codes, and E8M0 scales near 2^-4 (the entries of a normed, rotated row).
__global__ void fill_entries(uint8_t* codes, int64_t ncodes, uint8_t* scales, int64_t nscales, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < ncodes; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    codes[i] = static_cast<uint8_t>(h);
    if (i < nscales) scales[i] = static_cast<uint8_t>(121 + (h >> 8) % 4);
  }
}

}  // namespace is

using namespace is;

int main() {
  constexpr int HI = 64, DI = 128, K = 512, ratio = 4, trials = 30;
  constexpr int64_t kMaxTokens = 1 << 20, kMaxEntries = kMaxTokens / ratio;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int64_t flush_vecs = (256ll << 20) / 16;
  uint4* flush = nullptr;
  CK(cudaMalloc(&flush, flush_vecs * 16));

  uint8_t *codes = nullptr, *scales = nullptr;
  CK(cudaMalloc(&codes, kMaxEntries * DI / 2));
  CK(cudaMalloc(&scales, kMaxEntries * DI / 32));
  fill_entries<<<1024, 256>>>(codes, kMaxEntries * DI / 2, scales, kMaxEntries * DI / 32, 5);
  LayerCache lc;
  lc.idx_entries.codes = codes;
  lc.idx_entries.scales = scales;
  LayerCache* dlc = nullptr;
  CK(cudaMalloc(&dlc, sizeof(LayerCache)));
  CK(cudaMemcpy(dlc, &lc, sizeof(LayerCache), cudaMemcpyHostToDevice));

  // q: FP4-simulated values of 64 heads (any floats on the e2m1 grid times a power of two do),
  // the head weights, one row.
  std::mt19937 rng(3);
  const float grid[] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  std::vector<float> q(HI * DI), w(HI);
  for (float& v : q) v = grid[rng() % 8] * ((rng() & 1) ? -0.125f : 0.125f);
  for (float& v : w) v = std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng);
  float *dq = nullptr, *dw = nullptr, *score = nullptr;
  CK(cudaMalloc(&dq, q.size() * 4));
  CK(cudaMalloc(&dw, w.size() * 4));
  CK(cudaMalloc(&score, kMaxEntries * 4));
  CK(cudaMemcpy(dq, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dw, w.data(), w.size() * 4, cudaMemcpyHostToDevice));
  int32_t *slot = nullptr, *pos = nullptr, *idx = nullptr;
  uint32_t* digits = nullptr;
  CK(cudaMalloc(&slot, 4));
  CK(cudaMalloc(&pos, 4));
  CK(cudaMalloc(&idx, K * 4));
  CK(cudaMalloc(&digits, kTopkDigits * 4));
  CK(cudaMemset(slot, 0, 4));
  CK(cudaMemset(digits, 0, kTopkDigits * 4));

  // IS_NO_FLUSH=1 leaves L2 as the previous run left it: the row's entries (17 MB at 1M tokens)
  // then come from L2, bounding what fetching them ahead could give.
  const bool no_flush = std::getenv("IS_NO_FLUSH") != nullptr;
  cudaEvent_t a, b, c;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaEventCreate(&c));
  std::printf("| tokens | entries | scores us | top-k us | scores + top-k us | entry bytes / scores time |\n|---|---|---|---|---|---|\n");
  for (int round = 0; round < 2; ++round)
    for (int64_t tokens : {int64_t{4096}, kMaxTokens}) {
      const int32_t p = static_cast<int32_t>(tokens - 1);
      CK(cudaMemcpy(pos, &p, 4, cudaMemcpyHostToDevice));
      const int64_t count = tokens / ratio;
      std::vector<float> ts, tk, tt;
      for (int i = 0; i < trials + 2; ++i) {
        if (!no_flush) flush_l2_kernel<<<528, 256, 0, s>>>(flush, flush_vecs, i);
        CK(cudaEventRecord(a, s));
        indexer_scores_cuda(dq, dw, 1.0f, 1, HI, DI, slot, pos, dlc, true, score, kMaxEntries, count, s, digits);
        CK(cudaEventRecord(b, s));
        topk_cuda(score, kMaxEntries, 1, pos, ratio, K, idx, s, digits);
        CK(cudaEventRecord(c, s));
        CK(cudaEventSynchronize(c));
        float ms1 = 0, ms2 = 0;
        CK(cudaEventElapsedTime(&ms1, a, b));
        CK(cudaEventElapsedTime(&ms2, b, c));
        if (i >= 2) ts.push_back(ms1 * 1000), tk.push_back(ms2 * 1000), tt.push_back((ms1 + ms2) * 1000);
      }
      CK(cudaGetLastError());
      auto med = [](std::vector<float> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
      };
      const double bytes = static_cast<double>(count) * (DI / 2 + DI / 32);
      std::printf("| %lld | %lld | %.2f | %.2f | %.2f | %.0f GB/s |\n", static_cast<long long>(tokens),
                  static_cast<long long>(count), med(ts), med(tk), med(tt), bytes / (med(ts) * 1e3));
    }
  // The top-k's picks must be K distinct entries in ascending order (a sanity check of the setup).
  std::vector<int32_t> picks(K);
  CK(cudaMemcpy(picks.data(), idx, K * 4, cudaMemcpyDeviceToHost));
  bool ok = true;
  for (int i = 1; i < K; ++i) ok &= picks[i] > picks[i - 1];
  std::printf("top-k picks ascending and distinct: %s (first %d, last %d)\n", ok ? "yes" : "NO", picks[0], picks[K - 1]);
  // A hash of the last (1M-token) row's scores, bit for bit: builds of a variant of the scores kernel
  // that keeps the summation order must print the same.
  std::vector<uint32_t> bits(kMaxEntries);
  CK(cudaMemcpy(bits.data(), score, kMaxEntries * 4, cudaMemcpyDeviceToHost));
  std::printf("scores at 1M tokens: FNV-1a hash %016llx\n", static_cast<unsigned long long>(fnv1a(bits)));
  // IS_DUMP=file keeps this row's scores and picks; IS_REF=file compares them with a kept row (a
  // variant that changes the summation order: how far the scores moved, how many picks changed).
  std::vector<int32_t> my_picks(K);
  CK(cudaMemcpy(my_picks.data(), idx, K * 4, cudaMemcpyDeviceToHost));
  if (const char* f = std::getenv("IS_DUMP")) {
    FILE* fp = std::fopen(f, "wb");
    std::fwrite(bits.data(), 4, bits.size(), fp);
    std::fwrite(my_picks.data(), 4, K, fp);
    std::fclose(fp);
  }
  if (const char* f = std::getenv("IS_REF")) {
    std::vector<uint32_t> ref(kMaxEntries);
    std::vector<int32_t> ref_picks(K);
    FILE* fp = std::fopen(f, "rb");
    const bool ok_read = fp && std::fread(ref.data(), 4, ref.size(), fp) == ref.size() &&
                         std::fread(ref_picks.data(), 4, K, fp) == static_cast<size_t>(K);
    if (fp) std::fclose(fp);
    if (!ok_read) {
      std::printf("IS_REF: cannot read %s\n", f);
      return 1;
    }
    double max_ref = 0.0, max_diff = 0.0;
    for (int64_t i = 0; i < kMaxEntries / 1; ++i) {
      float a, b;
      std::memcpy(&a, &bits[i], 4);
      std::memcpy(&b, &ref[i], 4);
      max_ref = std::max(max_ref, static_cast<double>(std::fabs(b)));
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(a - b)));
    }
    std::vector<int32_t> common;
    std::set_intersection(my_picks.begin(), my_picks.end(), ref_picks.begin(), ref_picks.end(), std::back_inserter(common));
    std::printf("against %s: max |d| %.3g (max |ref| %.3g, relative %.3g); picks in common %zu of %d\n", f, max_diff,
                max_ref, max_diff / std::max(max_ref, 1e-30), common.size(), K);
  }
  return ok ? 0 : 1;
}
