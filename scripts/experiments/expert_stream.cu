// How close do the decode step's weight streams come to what one kernel can read? A development
// experiment for the batch-1 decode step (docs/cuda.md), not part of dsv4. Each case reads weights
// that are not in L2 (a 256 MiB write between trials) and is timed alone with events (median).
//   cases: the routed experts' two few-row kernels on 6 of 64 experts (V4-Flash shapes, FP4), the
//   FP8 few-row product at wq_b's and wo_b's shapes, and plain reads of the same bytes: a flat
//   read (the ceiling for that many bytes in one kernel) and load-only replicas of the expert
//   kernel's access pattern (which part of the gap is the pattern, which the arithmetic).
// The expert kernels come in with their source file (this file includes it), so the register
// kernel (moe_gemv_kernel) and the alternatives in expert_kernels.cuh run side by side, each
// checked bit for bit against it first:
//   - whole tiles in shared memory by bulk copies or cp.async, and a per-warp cp.async ring: both
//     measured slower (bench/results/2026-11-29-cuda-9.md);
//   - (the activation rows converted once per block, the tenth session's: the same bits; W1/W3 −5%
//     with bf16 input but +1% with the model's float32 input, W2 +1%; bench/results/
//     2026-11-29-cuda-10.md. Not kept, and removed from here.)
// Arguments: none (everything), `fp8` (the FP8 products only), `ncu` (one launch of each expert
// kernel, for ncu).
// On the device machine:
//   nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Isrc \
//     scripts/experiments/expert_stream.cu \
//     src/ops/gemv.cu src/cuda/launch.cu -o /tmp/es && /tmp/es
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <random>
#include <vector>

#include "ops/cuda_ops.h"
#include "../../src/ops/moe_experts.cu"

#include "expert_kernels.cuh"  // the alternatives it times
#include "expert_setup.cuh"

using namespace dsv4::cuda;

namespace es {  // named: an anonymous one would clash with the included file's under `using`

// Up to 16 regions read as one stream: block b takes 16-byte vectors b·T + i, then + grid·T, kDepth
// vectors in flight per thread.
struct Regions {
  const uint8_t* p[16];
  int64_t vecs[16];  // 16-byte vectors
  int64_t first[17];
  int n;
};
template <int kDepth>
__global__ void __launch_bounds__(256) read_regions(Regions r, uint32_t* sink) {
  uint32_t acc = 0;
  const int64_t total = r.first[r.n];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i0 = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i0 < total; i0 += kDepth * stride) {
    uint4 v[kDepth];
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
      const int64_t i = i0 + u * stride;
      v[u] = make_uint4(0, 0, 0, 0);
      if (i < total) {
        int j = 0;
        while (i >= r.first[j + 1]) ++j;
        v[u] = ptx::ld_streamed(r.p[j] + 16 * (i - r.first[j]));
      }
    }
#pragma unroll
    for (int u = 0; u < kDepth; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

// The expert kernel's loads without its arithmetic: block (x, tile) = 16 rows of expert tiles[tile]
// for kMats matrices; warp w of kWarps takes steps w, w + kWarps, ...; lane (g, t) loads 16 bytes of
// rows g and g + 8 at byte (4s + t)·16 and the scale byte, kDepth steps ahead.
template <int kMats, int kWarps, int kDepth>
__global__ void __launch_bounds__(kWarps * 32) pattern_kernel(const uint8_t* c0, const uint8_t* c1, const uint8_t* s0,
                                                             const uint8_t* s1, int rows, int K, const int* experts,
                                                             uint32_t* sink) {
  const int e = experts[blockIdx.y];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int n0 = blockIdx.x * 16;
  const int steps = K / 128;
  const int64_t rb = K / 2, sb = K / 32;
  const uint8_t* code[kMats][2];
  const uint8_t* sc[kMats][2];
  for (int m = 0; m < kMats; ++m)
    for (int r = 0; r < 2; ++r) {
      const int64_t row = static_cast<int64_t>(e) * rows + n0 + g + 8 * r;
      code[m][r] = (m ? c1 : c0) + row * rb;
      sc[m][r] = (m ? s1 : s0) + row * sb;
    }
  uint32_t acc = 0;
  uint4 st[kDepth][kMats][2];
  uint32_t ss[kDepth][kMats][2];
  auto load = [&](int u, int s) {
    for (int m = 0; m < kMats; ++m)
      for (int r = 0; r < 2; ++r) {
        st[u][m][r] = make_uint4(0, 0, 0, 0);
        ss[u][m][r] = 0;
        if (s < steps) {
          st[u][m][r] = ptx::ld_streamed(code[m][r] + (4 * s + t) * 16);
          ss[u][m][r] = __ldg(sc[m][r] + 4 * s + t);
        }
      }
  };
#pragma unroll
  for (int u = 0; u < kDepth; ++u) load(u, warp + u * kWarps);
  for (int s0 = warp; s0 < steps; s0 += kDepth * kWarps) {
#pragma unroll
    for (int u = 0; u < kDepth; ++u) {
#pragma unroll
      for (int m = 0; m < kMats; ++m)
#pragma unroll
        for (int r = 0; r < 2; ++r) acc ^= st[u][m][r].x ^ st[u][m][r].y ^ st[u][m][r].z ^ st[u][m][r].w ^ ss[u][m][r];
      load(u, s0 + (u + kDepth) * kWarps);
    }
  }
  if (acc == 0x9e3779b9u) sink[0] = acc;
}

}  // namespace es

using namespace es;
using namespace expset;

int main(int argc, char** argv) {
  const bool profile = argc > 1 && std::string(argv[1]) == "ncu";  // each kernel once, for ncu
  const bool fp8_only = argc > 1 && std::string(argv[1]) == "fp8";  // only the FP8 products
  constexpr int E = 64, k = 6, D = 4096, F = 2048, trials = 30;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  Timer tm{s, nullptr, (256ll << 20) / 16};
  tm.flush = dalloc<uint4>(tm.flush_vecs);

  const ExpertWeights ew = make_expert_weights(E, D, F, 3, 118);
  uint8_t *w1c = ew.w1c, *w3c = ew.w3c, *w1s = ew.w1s, *w3s = ew.w3s, *w2c = ew.w2c, *w2s = ew.w2s;
  const ExpertMatrix W1 = ew.W1, W3 = ew.W3, W2 = ew.W2;
  bf16* x = dalloc<bf16>(size_t(k) * D);
  bf16* h = dalloc<bf16>(size_t(k) * F);
  float* y = dalloc<float>(size_t(k) * D);
  fill_random<<<64, 256>>>(reinterpret_cast<uint8_t*>(x), size_t(k) * D * 2, 7, 0x3f, 0x10);  // bf16s near 2^-?
  CK(cudaMemset(h, 0, size_t(k) * F * 2));
  float* xf = dalloc<float>(D);  // the token row for the gather form (perm / k = token 0)
  {
    std::mt19937 g(11);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    std::vector<float> v(D);
    for (float& f : v) f = u(g);
    CK(cudaMemcpy(xf, v.data(), D * 4, cudaMemcpyHostToDevice));
  }
  float* weight = dalloc<float>(k);
  CK(cudaMemset(weight, 0, k * 4));
  int32_t *offsets = dalloc<int32_t>(E + 1), *perm = dalloc<int32_t>(k), *ntiles = dalloc<int32_t>(1);
  int2* tiles = dalloc<int2>(k);
  int* experts = dalloc<int>(k);
  uint32_t* sink = dalloc<uint32_t>(1);

  // Trial i routes the one token to 6 distinct experts drawn afresh.
  const std::vector<std::vector<int>> picks = expert_picks(trials + 2, E, k, 7);
  auto setup_experts = [&](int i) {
    const std::vector<int>& ex = picks[i];
    std::vector<int32_t> off(E + 1), pm(k);
    std::vector<int2> tl(k);
    int o = 0, n = 0;
    for (int e = 0; e < E; ++e) {
      off[e] = o;
      if (n < k && ex[n] == e) tl[n] = make_int2(e, o), pm[n] = n, ++o, ++n;
    }
    off[E] = o;
    CK(cudaMemcpyAsync(offsets, off.data(), off.size() * 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(perm, pm.data(), k * 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(tiles, tl.data(), k * sizeof(int2), cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(ntiles, &k, 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(experts, ex.data(), k * 4, cudaMemcpyHostToDevice, s));
  };
  // The bytes the two expert kernels read in trial i, as regions.
  Regions r13{}, r2{};
  auto regions_of = [&](int i, bool down) {
    Regions r{};
    int64_t first = 0;
    auto add = [&](const uint8_t* p, int64_t bytes) {
      r.p[r.n] = p, r.vecs[r.n] = bytes / 16, r.first[r.n] = first;
      first += bytes / 16;
      r.first[++r.n] = first;
    };
    for (int e : picks[i]) {
      if (!down) {
        add(w1c + size_t(e) * F * D / 2, int64_t(F) * D / 2);
        add(w3c + size_t(e) * F * D / 2, int64_t(F) * D / 2);
      } else {
        add(w2c + size_t(e) * D * F / 2, int64_t(D) * F / 2);
      }
    }
    return r;
  };
  const double mb13 = 2.0 * k * F * D * (0.5 + 1.0 / 32) / 1e6, mb2 = 1.0 * k * D * F * (0.5 + 1.0 / 32) / 1e6;
  auto row = [](const char* name, double mb, double us) { std::printf("| %s | %.1f | %.2f | %.0f |\n", name, mb, us, mb * 1e3 / us); };

  // The register kernel and the shared-memory kernel at 4 and 8 warps; h and y of each against the
  // register kernel's (the same bits expected at 4 warps).
  bf16* h_ref = dalloc<bf16>(size_t(k) * F);
  float* y_ref = dalloc<float>(size_t(k) * D);
  auto same_bits = [&](const void* a, const void* b, size_t bytes) {
    std::vector<uint8_t> ha(bytes), hb(bytes);
    CK(cudaMemcpy(ha.data(), a, bytes, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hb.data(), b, bytes, cudaMemcpyDeviceToHost));
    size_t diff = 0;
    for (size_t i = 0; i < bytes; ++i) diff += ha[i] != hb[i];
    return diff;
  };
  using C = GemvConfig;
  const dim3 g13(F / C::kRows, k), g2(D / C::kRows, k);
  auto reg13 = [&](bf16* out) {
    moe_gemv_kernel<true, true><<<g13, C::kWarps * 32, 0, s>>>(x, nullptr, 1, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, out, nullptr);
  };
  auto reg2 = [&](float* out) {
    moe_gemv_kernel<false, true><<<g2, C::kWarps * 32, 0, s>>>(h_ref, nullptr, 1, W2, W2, tiles, ntiles, offsets, 0.0f, nullptr, nullptr, nullptr, out);
  };
  auto smem13 = [&](auto kernel, int warps, int slices, bf16* out) {
    const size_t b = SmemTile(D, slices).bytes(2);
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    kernel<<<g13, warps * 32, b, s>>>(x, nullptr, 1, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, out, nullptr);
  };
  auto smem2 = [&](auto kernel, int warps, int slices, float* out) {
    const size_t b = SmemTile(F, slices).bytes(1);
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    kernel<<<g2, warps * 32, b, s>>>(h_ref, nullptr, 1, W2, W2, tiles, ntiles, offsets, 0.0f, nullptr, nullptr, nullptr, out);
  };
  setup_experts(0);
  CK(cudaMemcpy(weight, std::vector<float>(k, 0.75f).data(), k * 4, cudaMemcpyHostToDevice));
  reg13(h_ref), reg2(y_ref);
  auto bits = [&](const char* what) {
    CK(cudaDeviceSynchronize());
    std::printf("%s: h differs in %zu of %zu bytes, y in %zu of %zu\n", what, same_bits(h, h_ref, size_t(k) * F * 2),
                size_t(k) * F * 2, same_bits(y, y_ref, size_t(k) * D * 4), size_t(k) * D * 4);
    CK(cudaMemset(h, 0, size_t(k) * F * 2));
    CK(cudaMemset(y, 0, size_t(k) * D * 4));
  };
#define VARIANT(W, S, B) \
  smem13(moe_gemv_smem_kernel<true, W, S, B>, W, S, h), smem2(moe_gemv_smem_kernel<false, W, S, B>, W, S, y), bits("smem " #W " warps, " #S " slices, bulk " #B)
  auto ring13 = [&](auto kernel, int stages, bf16* out) {
    const size_t b = stages * 2 * 2 * 32 * 20 * 4;
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    kernel<<<g13, 128, b, s>>>(x, nullptr, 1, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, out, nullptr);
  };
  auto ring2 = [&](auto kernel, int stages, float* out) {
    const size_t b = stages * 1 * 2 * 32 * 20 * 4;
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(b)));
    kernel<<<g2, 128, b, s>>>(h_ref, nullptr, 1, W2, W2, tiles, ntiles, offsets, 0.0f, nullptr, nullptr, nullptr, out);
  };
  if (profile) {  // cold weights for each: another trial's experts
    for (int i = 1; i <= 4; ++i) {
      setup_experts(i);
      if (i == 1) reg13(h), reg2(y);
      if (i == 2) ring13(moe_gemv_ring_kernel<true, 4>, 4, h), ring2(moe_gemv_ring_kernel<false, 4>, 4, y);
      if (i == 3) pattern_kernel<2, 4, 2><<<dim3(F / 16, k), 128, 0, s>>>(w1c, w3c, w1s, w3s, F, D, experts, sink);
      CK(cudaStreamSynchronize(s));
    }
    return 0;
  }
  if (!fp8_only) {
  VARIANT(4, 4, true);
  VARIANT(4, 1, true);
  VARIANT(4, 4, false);
  VARIANT(4, 2, false);
  std::printf("| case | MB | us | GB/s |\n|---|---|---|---|\n");
  ring13(moe_gemv_ring_kernel<true, 3>, 3, h), ring2(moe_gemv_ring_kernel<false, 3>, 3, y), bits("ring 3 stages");
  ring13(moe_gemv_ring_kernel<true, 4>, 4, h), ring2(moe_gemv_ring_kernel<false, 4>, 4, y), bits("ring 4 stages");
#define RING(S)                                                                                                  \
  row("experts w1/w3, ring " #S " stages", mb13, tm.median(trials, setup_experts, [&] { ring13(moe_gemv_ring_kernel<true, S>, S, h); })); \
  row("experts w2, ring " #S " stages", mb2, tm.median(trials, setup_experts, [&] { ring2(moe_gemv_ring_kernel<false, S>, S, y); }))
#define TIME(W, S, B)                                                                                                            \
  row("experts w1/w3, smem " #W " warps, " #S " slices, bulk " #B, mb13,                                                         \
      tm.median(trials, setup_experts, [&] { smem13(moe_gemv_smem_kernel<true, W, S, B>, W, S, h); }));                           \
  row("experts w2, smem " #W " warps, " #S " slices, bulk " #B, mb2,                                                             \
      tm.median(trials, setup_experts, [&] { smem2(moe_gemv_smem_kernel<false, W, S, B>, W, S, y); }))
  for (int round = 0; round < 2; ++round) {
    row("experts w1/w3, register kernel", mb13, tm.median(trials, setup_experts, [&] { reg13(h); }));
    row("experts w2, register kernel", mb2, tm.median(trials, setup_experts, [&] { reg2(y); }));
    row("experts w1/w3, register kernel, f32 x (the model's)", mb13, tm.median(trials, setup_experts, [&] {
          moe_gemv_kernel<true, true><<<g13, C::kWarps * 32, 0, s>>>(nullptr, xf, 6, W1, W3, tiles, ntiles, offsets, 0.0f, weight, perm, h, nullptr); }));
    RING(4);
    row("experts w1/w3, ring 4 stages, x not prefetched", mb13, tm.median(trials, setup_experts, [&] { ring13(moe_gemv_ring_kernel<true, 4, false>, 4, h); }));
    row("experts w2, ring 4 stages, x not prefetched", mb2, tm.median(trials, setup_experts, [&] { ring2(moe_gemv_ring_kernel<false, 4, false>, 4, y); }));
  }
  auto flat = [&](const char* name, bool down, int depth, int blocks_per_sm) {
    row(name, down ? mb2 : mb13, tm.median(trials, [&](int i) { setup_experts(i), (down ? r2 : r13) = regions_of(i, down); }, [&] {
          const Regions& r = down ? r2 : r13;
          if (depth == 4) read_regions<4><<<sms * blocks_per_sm, 256, 0, s>>>(r, sink);
          else read_regions<8><<<sms * blocks_per_sm, 256, 0, s>>>(r, sink);
        }));
  };
  flat("flat read of w1/w3's codes (depth 4, 4 blocks/SM)", false, 4, 4);
  flat("flat read of w1/w3's codes (depth 8, 4 blocks/SM)", false, 8, 4);
  flat("flat read of w1/w3's codes (depth 4, 8 blocks/SM)", false, 4, 8);
  flat("flat read of w2's codes (depth 4, 4 blocks/SM)", true, 4, 4);
  flat("flat read of w2's codes (depth 8, 4 blocks/SM)", true, 8, 4);
  auto pattern = [&](const char* name, auto kernel, bool down, int warps) {
    row(name, down ? mb2 : mb13, tm.median(trials, setup_experts, [&] {
          if (!down) kernel<<<dim3(F / 16, k), warps * 32, 0, s>>>(w1c, w3c, w1s, w3s, F, D, experts, sink);
          else kernel<<<dim3(D / 16, k), warps * 32, 0, s>>>(w2c, w2c, w2s, w2s, D, F, experts, sink);
        }));
  };
  pattern("w1/w3 pattern, loads only (4 warps, depth 2: as the kernel)", pattern_kernel<2, 4, 2>, false, 4);
  pattern("w2 pattern, loads only (4 warps, depth 2: as the kernel)", pattern_kernel<1, 4, 2>, true, 4);

  }
  // FP8 few-row products at wq_b's (1024 -> 32768) and wo_b's (8192 -> 4096) shapes, 8 weight copies
  // in rotation.
  for (auto [N, K, name] : {std::tuple<int64_t, int64_t, const char*>{32768, 1024, "fp8 gemv wq_b 1024->32768, M=1"},
                            std::tuple<int64_t, int64_t, const char*>{4096, 8192, "fp8 gemv wo_b 8192->4096, M=1"},
                            std::tuple<int64_t, int64_t, const char*>{8192, 4096, "fp8 gemv 4096->8192, M=1"}}) {
    constexpr int copies = 8;
    const size_t wb = size_t(N) * K;
    uint8_t* w = dalloc<uint8_t>(wb * copies);
    CK(cudaMemset(w, 0x38, wb * copies));
    float* ws = dalloc<float>(size_t(N / 128) * (K / 128));
    uint8_t* xq = dalloc<uint8_t>(K);
    float* xs = dalloc<float>(K / 128);
    float* yo = dalloc<float>(N);
    CK(cudaMemset(ws, 0, size_t(N / 128) * (K / 128) * 4));
    CK(cudaMemset(xq, 0x38, K));
    CK(cudaMemset(xs, 0, K / 128 * 4));
    GemvArgs a;
    a.weights = GemvWeights::FP8Block;
    a.M = 1, a.N = N, a.K = K, a.ldw = K, a.w_scale = ws, a.ldw_scale = K / 128, a.xq = xq, a.xs = xs, a.ldxq = K,
    a.ldxs = 1, a.y = yo, a.ldy = N;
    int cur = 0;
    row(name, wb / 1e6, tm.median(trials, [&](int i) { cur = i % copies; }, [&] {
          a.w_fp8 = w + wb * cur;
          gemv_cuda(a, s);
        }));
    Regions r{};
    r.n = 1, r.first[0] = 0;
    row("  flat read of the same bytes (depth 4, 4 blocks/SM)", wb / 1e6, tm.median(trials, [&](int i) { cur = i % copies; }, [&] {
          r.p[0] = w + wb * cur, r.vecs[0] = wb / 16, r.first[1] = wb / 16;
          read_regions<4><<<sms * 4, 256, 0, s>>>(r, sink);
        }));
    CK(cudaFree(w));
  }
  // The ceiling for a long stream: 1 GiB.
  {
    const int64_t bytes = 1ll << 30;
    uint8_t* big = dalloc<uint8_t>(bytes);
    CK(cudaMemset(big, 1, bytes));
    Regions r{};
    r.n = 1, r.p[0] = big, r.vecs[0] = bytes / 16, r.first[0] = 0, r.first[1] = bytes / 16;
    row("flat read, 1 GiB (depth 4, 4 blocks/SM)", bytes / 1e6, tm.median(5, [](int) {}, [&] {
          read_regions<4><<<sms * 4, 256, 0, s>>>(r, sink);
        }));
  }
  CK(cudaDeviceSynchronize());
  return 0;
}
