// What does a kernel boundary cost on the decode chain? A development experiment for the decode step
// (docs/cuda.md), not part of dsv4. A producer grid (P blocks, each busy for a while, then writing
// a word) and a consumer grid launched with programmatic dependent launch (PDL) on the same
// stream, already resident while the producer runs. The consumer learns that the producer is done
// in one of two ways:
//   pdl:  griddepcontrol.wait (the whole producer grid complete and its writes visible);
//   flag: each producer block writes, fences and adds one to a counter; the consumer's blocks poll
//         it with acquire loads (no griddepcontrol.wait at all).
// Stamps (%globaltimer): each producer block's last write, each consumer block's release. The
// release latency is the first (and last) consumer release after the last producer write; the
// step cost is the consumer's end after that write.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/pdl_release.cu \
//     -o /tmp/pr && /tmp/pr
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "experiment.cuh"

__device__ __forceinline__ unsigned long long now_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

struct Stamps {
  unsigned long long* prod_end;  // [P]
  unsigned long long* cons_rel;  // [C]
  unsigned long long* cons_end;  // [C]
};

__global__ void producer(int busy_ns, int* data, unsigned* counter, Stamps st, int flag) {
  asm volatile("griddepcontrol.launch_dependents;");
  const unsigned long long t0 = now_ns();
  // Blocks end at different times, as a product's last wave does: block b works busy · (1 + b % 4) / 4.
  const unsigned long long want = static_cast<unsigned long long>(busy_ns) * (1 + blockIdx.x % 4) / 4;
  while (now_ns() - t0 < want) {
  }
  data[blockIdx.x * blockDim.x + threadIdx.x] = static_cast<int>(blockIdx.x + threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    if (flag) {
      __threadfence();
      atomicAdd(counter, 1u);
    }
    st.prod_end[blockIdx.x] = now_ns();
  }
}

__global__ void consumer(const int* data, int n, const unsigned* counter, unsigned target, Stamps st, int flag,
                         long long* sink) {
  if (flag) {
    if (threadIdx.x == 0) {
      unsigned v;
      do {
        asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
      } while (v < target);
    }
    __syncthreads();
  } else {
    asm volatile("griddepcontrol.wait;" ::: "memory");
  }
  if (threadIdx.x == 0) st.cons_rel[blockIdx.x] = now_ns();
  long long s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += __ldcg(data + i);  // every producer write
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0)
    atomicAdd(reinterpret_cast<unsigned long long*>(sink), static_cast<unsigned long long>(s));
  __syncthreads();
  if (threadIdx.x == 0) st.cons_end[blockIdx.x] = now_ns();
}

int main() {
  const int P = 528, C = 132, T = 128, busy = 8000;
  int* data;
  unsigned* counter;
  long long* sink;
  unsigned long long* stamps;
  CK(cudaMalloc(&data, P * T * sizeof(int)));
  CK(cudaMalloc(&counter, sizeof(unsigned)));
  CK(cudaMalloc(&sink, sizeof(long long)));
  CK(cudaMalloc(&stamps, (P + 2 * C) * sizeof(unsigned long long)));
  CK(cudaMemset(counter, 0, sizeof(unsigned)));
  Stamps st{stamps, stamps + P, stamps + P + C};
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  unsigned target = 0;
  for (int flag : {0, 1}) {
    std::vector<double> rel_first, rel_last, end_last;
    for (int rep = 0; rep < 40; ++rep) {
      target += P;  // the counter only grows: each round waits for its own P more
      producer<<<P, T, 0, s>>>(busy, data, counter, st, 1);
      launch_pdl(consumer, C, T, 0, s, static_cast<const int*>(data), P * T, static_cast<const unsigned*>(counter),
                 target, st, flag, sink);
      CK(cudaStreamSynchronize(s));
      std::vector<unsigned long long> h(P + 2 * C);
      CK(cudaMemcpy(h.data(), stamps, h.size() * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
      const unsigned long long pend = *std::max_element(h.begin(), h.begin() + P);
      const unsigned long long r0 = *std::min_element(h.begin() + P, h.begin() + P + C);
      const unsigned long long r1 = *std::max_element(h.begin() + P, h.begin() + P + C);
      const unsigned long long e1 = *std::max_element(h.begin() + P + C, h.end());
      if (rep < 4) continue;
      rel_first.push_back((double)((long long)(r0 - pend)));
      rel_last.push_back((double)((long long)(r1 - pend)));
      end_last.push_back((double)((long long)(e1 - pend)));
    }
    auto med = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2] / 1000.0;
    };
    std::printf("%-5s producer %d x %d (busy up to %d ns), consumer %d x %d: release after the last write "
                "first %.2f us, last %.2f us; consumer done %.2f us after it\n",
                flag ? "flag" : "pdl", P, T, busy, C, T, med(rel_first), med(rel_last), med(end_last));
  }
  return 0;
}
