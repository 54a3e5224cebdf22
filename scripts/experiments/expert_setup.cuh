// What the routed-expert experiments share (expert_stream.cu, expert_fp8_stream.cu; not part of
// dsv4): device buffers, random FP4 expert weights of V4-Flash's shapes, and each trial's experts.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "experiment.cuh"
#include "ops/cuda_ops.h"

namespace expset {

__global__ void fill_random(uint8_t* p, int64_t n, uint32_t seed, uint32_t mask, uint32_t add) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
    p[i] = static_cast<uint8_t>((h & mask) + add);
  }
}

template <typename T>
T* dalloc(size_t n) {
  T* p = nullptr;
  CK(cudaMalloc(&p, n * sizeof(T)));
  return p;
}

// FP4 experts: W1, W3 [E, F, D/2] codes + [E, F, D/32] scales; W2 [E, D, F/2] + [E, D, F/32]; random
// codes, scale bytes add + (hash & mask).
struct ExpertWeights {
  uint8_t *w1c, *w3c, *w1s, *w3s, *w2c, *w2s;
  dsv4::cuda::ExpertMatrix W1, W3, W2;
};
inline ExpertWeights make_expert_weights(int E, int D, int F, uint32_t scale_mask, uint32_t scale_add) {
  const size_t c13 = size_t(E) * F * D / 2, s13 = size_t(E) * F * D / 32, c2 = size_t(E) * D * F / 2, s2 = size_t(E) * D * F / 32;
  ExpertWeights w{};
  w.w1c = dalloc<uint8_t>(c13), w.w3c = dalloc<uint8_t>(c13), w.w1s = dalloc<uint8_t>(s13), w.w3s = dalloc<uint8_t>(s13);
  w.w2c = dalloc<uint8_t>(c2), w.w2s = dalloc<uint8_t>(s2);
  fill_random<<<1024, 256>>>(w.w1c, c13, 1, 0xff, 0);
  fill_random<<<1024, 256>>>(w.w3c, c13, 2, 0xff, 0);
  fill_random<<<1024, 256>>>(w.w2c, c2, 3, 0xff, 0);
  fill_random<<<1024, 256>>>(w.w1s, s13, 4, scale_mask, scale_add);
  fill_random<<<1024, 256>>>(w.w3s, s13, 5, scale_mask, scale_add);
  fill_random<<<1024, 256>>>(w.w2s, s2, 6, scale_mask, scale_add);
  w.W1 = {w.w1c, w.w1s, nullptr, F, D};
  w.W3 = {w.w3c, w.w3s, nullptr, F, D};
  w.W2 = {w.w2c, w.w2s, nullptr, D, F};
  return w;
}

// The experts of each trial: k distinct of E, drawn afresh, ascending.
inline std::vector<std::vector<int>> expert_picks(int trials, int E, int k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int>> picks;
  for (int i = 0; i < trials; ++i) {
    std::vector<int> all(E);
    for (int e = 0; e < E; ++e) all[e] = e;
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(k);
    std::sort(all.begin(), all.end());
    picks.push_back(all);
  }
  return picks;
}

}  // namespace expset
