// Do the FP4 expert tiles' scale bytes cost more than their share of the bytes because they live
// apart from the codes? A development experiment for the batch-1 decode step (docs/cuda.md), not
// part of dsv4. The routed SwiGLU product's loads alone (moe_gemv_kernel's pattern at B=1: a block
// per 16 rows of one of 6 experts, 4 warps over the 32 steps of K = 4096, two steps in flight, a
// lane's two 16-byte code loads and two scale bytes a matrix and step), from cold weights (other
// experts each trial and a 256 MiB write before it: experiment.cuh's Timer, medians of 30), with
// the scales:
//   apart:       as dsv4 stores them: a tile's 1024 code bytes in one array, its 64 scale bytes in
//                another;
//   interleaved: each tile's 64 scale bytes right after its 1024 code bytes (1088-byte units);
//   none:        no scale loads (the codes' bytes only);
// and a flat read of the codes and scales' bytes for the ceiling of one kernel. Results:
// bench/results/2026-12-02-cuda-39.md, call 5 (apart and interleaved the same, at a flat read's rate).
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/scale_layout.cu \
//     -o /tmp/sl && /tmp/sl
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "../../src/ops/cuda_ptx.cuh"
#include "experiment.cuh"

namespace {

using dsv4::cuda::ptx::ld_streamed;

constexpr int kE = 64, kTop = 6, kRows = 2048, kK = 4096, kSteps = kK / 128, kWarps = 4, kDepth = 2;
constexpr int64_t kTilesPerMatrix = int64_t(kE) * (kRows / 16) * kSteps;  // 16 × 128 tiles

enum Layout { kApart = 0, kInterleaved = 1, kNone = 2 };

// Block (row block x, expert slot y); lane (g, t): rows g and g + 8 of the tile, bytes 16 t.
template <int kLayout>
__global__ void __launch_bounds__(kWarps * 32) loads(const uint8_t* codes0, const uint8_t* codes1,
                                                    const uint8_t* scales0, const uint8_t* scales1,
                                                    const int* experts, uint32_t* sink) {
  const int e = experts[blockIdx.y];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t tile0 = (int64_t(e) * (kRows / 16) + blockIdx.x) * kSteps;  // the block's first tile
  const int unit = kLayout == kInterleaved ? 1088 : 1024;
  const uint8_t* c[2] = {codes0 + tile0 * unit + g * 64 + 16 * t, codes1 + tile0 * unit + g * 64 + 16 * t};
  const uint8_t* s[2];
  for (int m = 0; m < 2; ++m)  // interleaved: after the tile's 1024 code bytes
    s[m] = kLayout == kInterleaved ? (m ? codes1 : codes0) + tile0 * unit + 1024 + g * 4 + t
                                   : (m ? scales1 : scales0) + tile0 * 64 + g * 4 + t;
  const int sstride = kLayout == kInterleaved ? 1088 : 64;
  uint4 st[kDepth][2][2];
  uint32_t sc[kDepth][2][2];
  auto load = [&](int u, int step) {
#pragma unroll
    for (int m = 0; m < 2; ++m) {
      st[u][m][0] = st[u][m][1] = make_uint4(0, 0, 0, 0);
      sc[u][m][0] = sc[u][m][1] = 0;
      if (step < kSteps) {
        st[u][m][0] = ld_streamed(c[m] + int64_t(step) * unit);
        st[u][m][1] = ld_streamed(c[m] + int64_t(step) * unit + 512);
        if (kLayout != kNone) {
          sc[u][m][0] = __ldg(s[m] + int64_t(step) * sstride);
          sc[u][m][1] = __ldg(s[m] + int64_t(step) * sstride + 32);
        }
      }
    }
  };
  uint32_t acc = 0;
#pragma unroll
  for (int u = 0; u < kDepth; ++u) load(u, warp + u * kWarps);
  for (int s0 = warp; s0 < kSteps; s0 += kDepth * kWarps) {
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
#pragma unroll
      for (int m = 0; m < 2; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) acc ^= st[u][m][r].x ^ st[u][m][r].y ^ st[u][m][r].z ^ st[u][m][r].w ^ sc[u][m][r];
      load(u, s0 + u * kWarps + kDepth * kWarps);
    }
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

// The selected experts' bytes as one stream: block b reads 16-byte vectors b·256 + i, + grid·256.
__global__ void __launch_bounds__(256) flat(const uint8_t* const* base, int64_t per, int n, uint32_t* sink) {
  uint32_t acc = 0;
  const int64_t vecs = per / 16, total = vecs * n, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i0 < total; i0 += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t i = i0 + u * stride;
      v[u] = i < total ? ld_streamed(base[i / vecs] + 16 * (i % vecs)) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

}  // namespace

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int64_t code_bytes = kTilesPerMatrix * 1024, scale_bytes = kTilesPerMatrix * 64,
                inter_bytes = kTilesPerMatrix * 1088;
  uint8_t *c0, *c1, *s0, *s1, *i0, *i1;
  CK(cudaMalloc(&c0, code_bytes));
  CK(cudaMalloc(&c1, code_bytes));
  CK(cudaMalloc(&s0, scale_bytes));
  CK(cudaMalloc(&s1, scale_bytes));
  CK(cudaMalloc(&i0, inter_bytes));
  CK(cudaMalloc(&i1, inter_bytes));
  CK(cudaMemset(c0, 0x5a, code_bytes));
  CK(cudaMemset(c1, 0x5a, code_bytes));
  CK(cudaMemset(i0, 0x5a, inter_bytes));
  CK(cudaMemset(i1, 0x5a, inter_bytes));
  CK(cudaMemset(s0, 0x7f, scale_bytes));
  CK(cudaMemset(s1, 0x7f, scale_bytes));
  int* experts;
  uint32_t* sink;
  const uint8_t** bases;
  CK(cudaMalloc(&experts, kTop * sizeof(int)));
  CK(cudaMalloc(&sink, 4));
  CK(cudaMalloc(&bases, 4 * kTop * sizeof(void*)));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  Timer tm{st, nullptr, (256 << 20) / 16};  // a 256 MiB write empties L2 before each trial
  CK(cudaMalloc(&tm.flush, 256 << 20));
  const int64_t per_expert_codes = (kRows / 16) * kSteps * 1024, per_expert_scales = (kRows / 16) * kSteps * 64;
  const double mb = 2.0 * kTop * (per_expert_codes + per_expert_scales) / 1e6;
  const double mb_codes = 2.0 * kTop * per_expert_codes / 1e6;
  // Trial i: other experts (and their bases for the flat reads).
  auto pick = [&](int trial) {
    std::vector<int> ex(kTop);
    for (int j = 0; j < kTop; ++j) ex[j] = (trial * 7 + j * 11) % kE;
    CK(cudaMemcpy(experts, ex.data(), sizeof(int) * kTop, cudaMemcpyHostToDevice));
    std::vector<const uint8_t*> hb;
    for (int j = 0; j < kTop; ++j)
      for (const uint8_t* base : {c0, c1}) hb.push_back(base + ex[j] * per_expert_codes);
    for (int j = 0; j < kTop; ++j)
      for (const uint8_t* base : {s0, s1}) hb.push_back(base + ex[j] * per_expert_scales);
    CK(cudaMemcpy(bases, hb.data(), hb.size() * sizeof(void*), cudaMemcpyHostToDevice));
  };
  const dim3 grid(kRows / 16, kTop);
  const int threads = kWarps * 32;
  auto row = [&](const char* name, double mbytes, const std::function<void()>& run) {
    const double us = tm.median(30, pick, run);
    std::printf("| %s | %.1f | %.2f | %.0f |\n", name, mbytes, us, mbytes * 1e3 / us);
  };
  std::printf("| case | MB | us | GB/s |\n|---|---|---|---|\n");
  for (int round = 0; round < 2; ++round) {
    row("loads, scales apart (dsv4's tiles)", mb,
        [&] { loads<kApart><<<grid, threads, 0, st>>>(c0, c1, s0, s1, experts, sink); });
    row("loads, scales interleaved (1088-byte units)", mb,
        [&] { loads<kInterleaved><<<grid, threads, 0, st>>>(i0, i1, nullptr, nullptr, experts, sink); });
    row("loads, no scales", mb_codes, [&] { loads<kNone><<<grid, threads, 0, st>>>(c0, c1, s0, s1, experts, sink); });
    row("flat read of codes and scales (two launches, 4 blocks an SM)", mb, [&] {
      flat<<<sms * 4, 256, 0, st>>>(bases, per_expert_codes, 2 * kTop, sink);
      flat<<<sms * 4, 256, 0, st>>>(bases + 2 * kTop, per_expert_scales, 2 * kTop, sink);
    });
    row("flat read of the codes (4 blocks an SM)", mb_codes,
        [&] { flat<<<sms * 4, 256, 0, st>>>(bases, per_expert_codes, 2 * kTop, sink); });
  }
  CK(cudaDeviceSynchronize());
  return 0;
}
