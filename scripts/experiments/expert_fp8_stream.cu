// The routed experts' decode products on the FP8 tensor cores (moe_experts_fp8.cu) against the
// bf16 register kernel (moe_experts.cu): a development experiment for the batch-1 decode step,
// not part of dsv4. V4-Flash shapes (D 4096, F 2048), FP4 weights, 6 of 64 experts a trial, one
// token (or `rows` tokens on the same experts), weights cold (L2 emptied before each trial).
// First each FP8 product is checked against a naive float32 reference of the same definition (x
// rounded to e4m3 in 1×128 blocks, exact FP4 weights): the error relative to Σ|w·x| of each
// output. Build variants with -DDSV4_EXPERT_FP8_... (scripts/experiments/stream_ab.sh expert_fp8).
//   nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Isrc \
//     scripts/experiments/expert_fp8_stream.cu \
//     src/cuda/launch.cu -o /tmp/ef && /tmp/ef [tokens]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "ops/cuda_device.cuh"
#include "ops/cuda_ops.h"
#include "../../src/ops/moe_experts.cu"
#include "expert_fp8_kernel.cu"

#include "expert_setup.cuh"

using namespace dsv4::cuda;

namespace ef {

using namespace expset;

// out[r][n] = Σ_c e2m1(W[e_r][n][c]) · 2^(s − 127) · q(x_r)[c] (and the Σ of |terms| in mag), float32,
// with q the e4m3 rounding of x in 1×128 blocks (dev:: helpers: the rule of quantize_e4m3_block128).
__global__ void reference(const float* x, int K, int N, const uint8_t* codes, const uint8_t* scales, const int* expert,
                          int rows, float* out, float* mag) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x, r = blockIdx.y;
  if (n >= N || r >= rows) return;
  const int64_t row = int64_t(expert[r]) * N + n;
  float acc = 0.0f, m = 0.0f;
  for (int b = 0; b < K; b += 128) {
    float amax = 0.0f;
    for (int c = 0; c < 128; ++c) amax = fmaxf(amax, fabsf(x[int64_t(r) * K + b + c]));
    const float s = ldexpf(1.0f, dev::fp8_scale_exp(amax));
    for (int c = b; c < b + 128; ++c) {
      const float xv = dev::e4m3_value(dev::e4m3_rn(x[int64_t(r) * K + c] / s)) * s;
      const uint8_t byte = codes[row * (K / 2) + c / 2];
      const float w = dev::e2m1_value(c % 2 ? byte >> 4 : byte & 15) * dev::e8m0_value(scales[row * (K / 32) + c / 32]);
      acc = fmaf(w, xv, acc);
      m += fabsf(w * xv);
    }
  }
  out[int64_t(r) * N + n] = acc;
  mag[int64_t(r) * N + n] = m;
}

__global__ void to_float(const bf16* a, float* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    b[i] = __bfloat162float(a[i]);
}

}  // namespace ef

using namespace ef;

int main(int argc, char** argv) {
  const int tokens = argc > 1 ? std::atoi(argv[1]) : 1;
  constexpr int E = 64, k = 6, D = 4096, F = 2048, trials = 30;
  const int rows = k * tokens;
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Timer tm{s, nullptr, (256ll << 20) / 16};
  tm.flush = dalloc<uint4>(tm.flush_vecs);

  const ExpertWeights ew = make_expert_weights(E, D, F, 7, 116);
  const uint8_t *w1c = ew.w1c, *w3c = ew.w3c, *w1s = ew.w1s, *w3s = ew.w3s, *w2c = ew.w2c, *w2s = ew.w2s;
  const ExpertMatrix W1 = ew.W1, W3 = ew.W3, W2 = ew.W2;

  // Token rows (float32, the model's gather form), the same rounded to bf16 per routed row (xs),
  // and bf16 rows of h for the down product.
  std::mt19937 g(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> xt(size_t(tokens) * D), hh(size_t(rows) * F);
  for (float& v : xt) v = nd(g) * (1.0f + 3.0f * (nd(g) > 2.0f));
  for (float& v : hh) v = nd(g) * 0.05f;
  std::vector<bf16> xsb(size_t(rows) * D), hb(size_t(rows) * F);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < D; ++c) xsb[size_t(r) * D + c] = __float2bfloat16_rn(xt[size_t(r % tokens) * D + c]);
  for (size_t i = 0; i < hh.size(); ++i) hb[i] = __float2bfloat16_rn(hh[i]);
  float* xf = dalloc<float>(xt.size());
  bf16* xs = dalloc<bf16>(xsb.size());
  bf16* h_in = dalloc<bf16>(hb.size());
  CK(cudaMemcpy(xf, xt.data(), xt.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(xs, xsb.data(), xsb.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(h_in, hb.data(), hb.size() * 2, cudaMemcpyHostToDevice));
  bf16* h = dalloc<bf16>(size_t(rows) * F);
  float* y = dalloc<float>(size_t(rows) * D);
  float* weight = dalloc<float>(rows);
  CK(cudaMemcpy(weight, std::vector<float>(rows, 1.0f).data(), rows * 4, cudaMemcpyHostToDevice));
  int32_t *offsets = dalloc<int32_t>(E + 1), *perm = dalloc<int32_t>(rows), *ntiles = dalloc<int32_t>(1);
  int2* tiles = dalloc<int2>(k);
  int* row_expert = dalloc<int>(rows);

  // Trial i routes every token to the same 6 distinct experts, drawn afresh; sorted row r = token
  // r % tokens of expert r / tokens, perm[r] = token · k + slot.
  const std::vector<std::vector<int>> picks = expert_picks(trials + 2, E, k, 7);
  auto setup = [&](int i) {
    const std::vector<int>& ex = picks[i];
    std::vector<int32_t> off(E + 1), pm(rows), re(rows);
    std::vector<int2> tl(k);
    int o = 0, n = 0;
    for (int e = 0; e < E; ++e) {
      off[e] = o;
      if (n < k && ex[n] == e) {
        tl[n] = make_int2(e, o);
        for (int tk = 0; tk < tokens; ++tk) pm[o + tk] = tk * k + n, re[o + tk] = e;
        o += tokens, ++n;
      }
    }
    off[E] = o;
    CK(cudaMemcpyAsync(offsets, off.data(), off.size() * 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(perm, pm.data(), rows * 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(row_expert, re.data(), rows * 4, cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(tiles, tl.data(), k * sizeof(int2), cudaMemcpyHostToDevice, s));
    CK(cudaMemcpyAsync(ntiles, &k, 4, cudaMemcpyHostToDevice, s));
    CK(cudaStreamSynchronize(s));
  };

  auto fp8_13 = [&](bool f32) {
    moe_gemv_fp8_swiglu_cuda(f32 ? nullptr : xs, f32 ? xf : nullptr, k, W1, W3, tiles, ntiles, k, offsets, 0.0f, weight, perm, h, s);
  };
  auto fp8_2 = [&] { moe_gemv_fp8_down_cuda(h_in, W2, tiles, ntiles, k, offsets, y, s); };
  auto reg13 = [&](bool f32) {
    if (f32) moe_gemv_swiglu_gather_cuda(xf, k, W1, W3, tiles, ntiles, k, offsets, 0.0f, weight, perm, h, s);
    else moe_gemv_swiglu_cuda(xs, W1, W3, tiles, ntiles, k, offsets, 0.0f, weight, perm, h, s);
  };
  auto reg2 = [&] { moe_gemv_down_cuda(h_in, W2, tiles, ntiles, k, offsets, y, s); };

  // Checks: W2's y directly, W1/W3 through h against the SwiGLU of the two references.
  setup(0);
  {
    float* xrows = dalloc<float>(size_t(rows) * D);
    float* hrows = dalloc<float>(size_t(rows) * F);
    std::vector<float> xr(size_t(rows) * D);
    for (int r = 0; r < rows; ++r) std::copy_n(xt.begin() + size_t(r % tokens) * D, D, xr.begin() + size_t(r) * D);
    CK(cudaMemcpy(xrows, xr.data(), xr.size() * 4, cudaMemcpyHostToDevice));
    to_float<<<256, 256>>>(h_in, hrows, int64_t(rows) * F);
    float *r1 = dalloc<float>(size_t(rows) * F), *r3 = dalloc<float>(size_t(rows) * F), *m1 = dalloc<float>(size_t(rows) * F),
          *m3 = dalloc<float>(size_t(rows) * F), *r2 = dalloc<float>(size_t(rows) * D), *m2 = dalloc<float>(size_t(rows) * D);
    // sorted row r of the setup is token r % tokens of expert (r / tokens): x rows in that order
    reference<<<dim3(F / 128, rows), 128>>>(xrows, D, F, w1c, w1s, row_expert, rows, r1, m1);
    reference<<<dim3(F / 128, rows), 128>>>(xrows, D, F, w3c, w3s, row_expert, rows, r3, m3);
    reference<<<dim3(D / 128, rows), 128>>>(hrows, F, D, w2c, w2s, row_expert, rows, r2, m2);
    fp8_2();
    CK(cudaDeviceSynchronize());
    std::vector<float> yr(size_t(rows) * D), ym(size_t(rows) * D), yg(size_t(rows) * D);
    CK(cudaMemcpy(yr.data(), r2, yr.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(ym.data(), m2, ym.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(yg.data(), y, yg.size() * 4, cudaMemcpyDeviceToHost));
    double worst = 0, mean = 0;
    for (size_t i = 0; i < yr.size(); ++i) {
      const double e = std::fabs(double(yg[i]) - yr[i]) / std::max(1e-30, double(ym[i]));
      worst = std::max(worst, e), mean += e;
    }
    std::printf("fp8 w2 vs reference: error / sum|terms| max %.3g mean %.3g\n", worst, mean / yr.size());
    for (bool f32 : {true, false}) {
      fp8_13(f32);
      CK(cudaDeviceSynchronize());
      std::vector<float> a(size_t(rows) * F), b(size_t(rows) * F), ma(size_t(rows) * F), mb(size_t(rows) * F);
      std::vector<bf16> hg(size_t(rows) * F);
      CK(cudaMemcpy(a.data(), r1, a.size() * 4, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(b.data(), r3, b.size() * 4, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(ma.data(), m1, a.size() * 4, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(mb.data(), m3, b.size() * 4, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(hg.data(), h, hg.size() * 2, cudaMemcpyDeviceToHost));
      double w = 0, mn = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        // h = silu(a)·b: compare with the reference's, relative to the scale its magnitudes allow
        const double ga = a[i], gb = b[i], ref = ga / (1 + std::exp(-ga)) * gb;
        const double scale = std::max(1e-30, (std::fabs(ga) + ma[i]) * (std::fabs(gb) + mb[i]));
        const double e = std::fabs(double(__bfloat162float(hg[i])) - ref) / scale;
        w = std::max(w, e), mn += e;
      }
      std::printf("fp8 w1/w3 (%s x) vs reference: error / scale max %.3g mean %.3g\n", f32 ? "f32" : "bf16", w, mn / a.size());
    }
  }

  const double mb13 = 2.0 * k * F * D * (0.5 + 1.0 / 32) / 1e6, mb2 = 1.0 * k * D * F * (0.5 + 1.0 / 32) / 1e6;
  auto row = [](const char* name, double mb, double us) { std::printf("| %s | %.1f | %.2f | %.0f |\n", name, mb, us, mb * 1e3 / us); };
  std::printf("| case (%d token%s) | MB | us | GB/s |\n|---|---|---|---|\n", tokens, tokens > 1 ? "s" : "");
  for (int round = 0; round < 2; ++round) {
    row("w1/w3 bf16 register kernel, f32 x", mb13, tm.median(trials, setup, [&] { reg13(true); }));
    row("w1/w3 fp8 wgmma, f32 x", mb13, tm.median(trials, setup, [&] { fp8_13(true); }));
    row("w1/w3 fp8 wgmma, bf16 x", mb13, tm.median(trials, setup, [&] { fp8_13(false); }));
    row("w2 bf16 register kernel", mb2, tm.median(trials, setup, [&] { reg2(); }));
    row("w2 fp8 wgmma", mb2, tm.median(trials, setup, [&] { fp8_2(); }));
  }
  return 0;
}
