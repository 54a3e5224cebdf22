#include <cstdio>
#include <cstdint>
__global__ void k(float p, const float* f, float* out, long long* cyc) {
  long long t0 = clock64();
  double s, c;
  float th = __fmul_rn(p, f[threadIdx.x]);
  sincos((double)th, &s, &c);
  out[threadIdx.x] = (float)s + (float)c;
  __syncwarp();
  long long t1 = clock64();
  if (threadIdx.x == 0) *cyc = t1 - t0;
}
int main() {
  float hf[32]; for (int i = 0; i < 32; ++i) hf[i] = powf(160000.0f, -i / 32.0f);
  float *f, *o; long long* c; cudaMalloc(&f, 128); cudaMalloc(&o, 128); cudaMalloc(&c, 8);
  cudaMemcpy(f, hf, 128, cudaMemcpyHostToDevice);
  for (float p : {4095.0f, 65535.0f, 262143.0f, 1048575.0f, 4194303.0f}) {
    long long best = 1LL << 60;
    for (int r = 0; r < 20; ++r) { k<<<1, 32>>>(p, f, o, c); long long h; cudaMemcpy(&h, c, 8, cudaMemcpyDeviceToHost); if (h < best) best = h; }
    printf("pos %.0f: %lld cycles (min of 20)\n", p, best);
  }
}
