// Small kernels of the CUDA model: embedding rows into the n streams, the MTP's stream
// update, and the random fills of a synthetic model (a hash of (seed, index), no state).
#include "cuda/check.h"
#include "cuda/launch.h"
#include "model/cuda_model_impl.cuh"
#include "ops/cuda_device.cuh"

namespace dsv4::cuda {

namespace {

unsigned grid_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

__global__ void embed_kernel(const float* tf, const bf16* tb, int64_t D, const int32_t* ids, int64_t rows, int n,
                             float* X) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * n * D) return;
  const int64_t d = i % D, r = i / (n * D);
  const int64_t src = static_cast<int64_t>(ids[r]) * D + d;
  X[i] = tf ? tf[src] : __bfloat162float(tb[src]);
}

__global__ void add_halves_kernel(const float* y2, int64_t M, int64_t N, float* y, int64_t ldy) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= M * N) return;
  const int64_t r = i / N, c = i % N;
  y[r * ldy + c] = y2[i] + y2[M * N + i];
}

__global__ void add_to_streams_kernel(float* X, const float* e, int64_t rows, int n, int64_t D) {
  dev::pdl_begin();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * n * D) return;
  X[i] += e[(i / (n * D)) * D + i % D];
}

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
// A standard normal from (seed, i) (Box–Muller on two hashed uniforms).
__device__ __forceinline__ float normal_at(uint64_t seed, int64_t i) {
  const uint64_t h = mix64(seed * 0x2545f4914f6cdd1dull + static_cast<uint64_t>(i));
  const float u1 = (static_cast<float>(h >> 40) + 0.5f) * (1.0f / 16777216.0f);
  const float u2 = static_cast<float>((h >> 16) & 0xffffff) * (1.0f / 16777216.0f);
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

__global__ void fill_normal_kernel(float* x, int64_t n, float std, uint64_t seed) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = std * normal_at(seed, i);
}
__global__ void fill_const_kernel(float* x, int64_t n, float v) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = v;
}
__global__ void fill_normal_bf16_kernel(bf16* x, int64_t n, float std, uint64_t seed) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = __float2bfloat16_rn(std * normal_at(seed, i));
}
__global__ void fill_fp8_kernel(uint8_t* codes, int64_t n, float* scales, int64_t nscales, float std, float s,
                                uint64_t seed) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < nscales) scales[i] = s;
  if (i < n) codes[i] = dev::e4m3_code(dev::fp8_sim_value(std * normal_at(seed, i), s) / s);
}
// One thread per byte (two values); scales: one per 32 values.
__global__ void fill_fp4_kernel(uint8_t* codes, uint8_t* scales, int64_t n, float std, int sexp, uint64_t seed) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n / 2) return;
  const float s = ldexpf(1.0f, sexp);
  const uint8_t lo = dev::e2m1_code(dev::fp4_sim_value(std * normal_at(seed, 2 * i), s) / s);
  const uint8_t hi = dev::e2m1_code(dev::fp4_sim_value(std * normal_at(seed, 2 * i + 1), s) / s);
  codes[i] = static_cast<uint8_t>(lo | (hi << 4));
  if (i % 16 == 0) scales[i / 16] = static_cast<uint8_t>(sexp + 127);
}
// k distinct experts per token id: a random start and a stride of E / k.
__global__ void fill_tid2eid_kernel(int32_t* t, int64_t V, int k, int E, uint64_t seed) {
  const int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (v >= V) return;
  const int start = static_cast<int>(mix64(seed + static_cast<uint64_t>(v)) % static_cast<uint64_t>(E));
  const int stride = max(1, E / k);
  for (int i = 0; i < k; ++i) t[v * k + i] = (start + i * stride) % E;
}

__global__ void fill_cache_bytes_kernel(uint8_t* p, size_t n, uint64_t seed) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i < n) p[i] = static_cast<uint8_t>(0x30 | (mix64(seed + i) & 0xf));
}

}  // namespace

void fill_cache_bytes_cuda(uint8_t* p, size_t n, uint64_t seed, cudaStream_t s) {
  if (n == 0) return;
  fill_cache_bytes_kernel<<<grid_for(static_cast<int64_t>(n), 256), 256, 0, s>>>(p, n, seed);
  DSV4_CUDA_LAUNCHED("fill_cache_bytes_kernel");
}

void embed_rows_cuda(const DTensor& table, const int32_t* ids, int64_t rows, int n, float* X, cudaStream_t s) {
  const int64_t total = rows * n * table.cols;
  if (total == 0) return;
  launch("embed_kernel", embed_kernel, grid_for(total, 256), 256, 0, s, table.f32.get(), table.bf.get(), table.cols, ids, rows, n, X);
}

void add_halves_cuda(const float* y2, int64_t M, int64_t N, float* y, int64_t ldy, cudaStream_t s) {
  if (M * N == 0) return;
  launch("add_halves_kernel", add_halves_kernel, grid_for(M * N, 256), 256, 0, s, y2, M, N, y, ldy);
}

void add_to_streams_cuda(float* X, const float* e, int64_t rows, int n, int64_t D, cudaStream_t s) {
  if (rows * n * D == 0) return;
  launch("add_to_streams_kernel", add_to_streams_kernel, grid_for(rows * n * D, 256), 256, 0, s, X, e, rows, n, D);
}

void fill_normal_cuda(float* x, int64_t n, float std, uint64_t seed, cudaStream_t s) {
  if (n == 0) return;
  fill_normal_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, n, std, seed);
  DSV4_CUDA_LAUNCHED("fill_normal_kernel");
}
void fill_const_cuda(float* x, int64_t n, float v, cudaStream_t s) {
  if (n == 0) return;
  fill_const_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, n, v);
  DSV4_CUDA_LAUNCHED("fill_const_kernel");
}
void fill_normal_bf16_cuda(bf16* x, int64_t n, float std, uint64_t seed, cudaStream_t s) {
  if (n == 0) return;
  fill_normal_bf16_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, n, std, seed);
  DSV4_CUDA_LAUNCHED("fill_normal_bf16_kernel");
}
void fill_fp8_cuda(uint8_t* codes, int64_t n, float* scales, int64_t nscales, float std, uint64_t seed, cudaStream_t s) {
  const float scale = std::ldexp(1.0f, static_cast<int>(std::ceil(std::log2(4.0f * std / 448.0f))));
  const int64_t total = std::max(n, nscales);
  fill_fp8_kernel<<<grid_for(total, 256), 256, 0, s>>>(codes, n, scales, nscales, std, scale, seed);
  DSV4_CUDA_LAUNCHED("fill_fp8_kernel");
}
void fill_fp4_cuda(uint8_t* codes, uint8_t* scales, int64_t n, float std, uint64_t seed, cudaStream_t s) {
  const int sexp = static_cast<int>(std::ceil(std::log2(3.0f * std / 6.0f)));
  if (n == 0) return;
  fill_fp4_kernel<<<grid_for(n / 2, 256), 256, 0, s>>>(codes, scales, n, std, sexp, seed);
  DSV4_CUDA_LAUNCHED("fill_fp4_kernel");
}
void fill_tid2eid_cuda(int32_t* t, int64_t V, int k, int E, uint64_t seed, cudaStream_t s) {
  fill_tid2eid_kernel<<<grid_for(V, 256), 256, 0, s>>>(t, V, k, E, seed);
  DSV4_CUDA_LAUNCHED("fill_tid2eid_kernel");
}

}  // namespace dsv4::cuda
