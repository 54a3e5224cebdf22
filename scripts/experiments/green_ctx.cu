// Can dsv4's decode step give a kernel chain SMs of its own? A development experiment, not part of
// dsv4. In a CSA layer the indexer's chain (query projection, scores, top-k) and wq_b compete for
// SMs: wq_b's blocks fill every SM's registers, so the chain's small kernels wait for slots. CUDA's
// green contexts partition the SMs (driver API: cuDevSmResourceSplitByCount, cuGreenCtxCreate,
// cuGreenCtxStreamCreate). Questions, each answered by a line of output:
//   1. the H200's partition granularity (minimum SM count and alignment);
//   2. whether a kernel on a green context's stream stays on that context's SMs (%smid of each
//      block), launched directly and from a captured CUDA graph that also holds a kernel of the
//      primary context (events fork and join the streams, as dsv4's side streams do);
//   3. whether two kernels on one green stream can be captured with a programmatic (PDL) edge;
//   4. whether a small kernel on a 16-SM partition starts while a kernel that fills the other
//      partition's SMs runs (start times by %globaltimer), against the same pair on plain streams.
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a scripts/experiments/green_ctx.cu -lcuda \
//     -o /tmp/gc && /tmp/gc
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <set>
#include <vector>

#include "experiment.cuh"

#define CU(x)                                                     \
  do {                                                            \
    CUresult r_ = (x);                                            \
    if (r_ != CUDA_SUCCESS) {                                     \
      const char* s_ = nullptr;                                   \
      cuGetErrorString(r_, &s_);                                  \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, s_);  \
      return 1;                                                   \
    }                                                             \
  } while (0)

__device__ __forceinline__ uint64_t now_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Block b writes its SM and its start time, then spins for `ns`.
__device__ __forceinline__ void record_and_spin(int* sm, uint64_t* start, int64_t ns) {
  uint32_t id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  const uint64_t t0 = now_ns();
  if (threadIdx.x == 0) {
    sm[blockIdx.x] = static_cast<int>(id);
    start[blockIdx.x] = t0;
  }
  while (static_cast<int64_t>(now_ns() - t0) < ns) {
  }
}
__global__ void where(int* sm, uint64_t* start, int64_t ns) { record_and_spin(sm, start, ns); }
// The same after a PDL wait (the second kernel of a programmatic pair).
__global__ void where_after(int* sm, uint64_t* start, int64_t ns) {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  record_and_spin(sm, start, ns);
}

struct Run {
  int* sm;
  uint64_t* start;
  int blocks;
  std::set<int> sms() const {
    std::vector<int> h(blocks);
    CK(cudaMemcpy(h.data(), sm, blocks * sizeof(int), cudaMemcpyDeviceToHost));
    return std::set<int>(h.begin(), h.end());
  }
  uint64_t first_start() const {
    std::vector<uint64_t> h(blocks);
    CK(cudaMemcpy(h.data(), start, blocks * sizeof(uint64_t), cudaMemcpyDeviceToHost));
    return *std::min_element(h.begin(), h.end());
  }
};
Run make_run(int blocks) {
  Run r{nullptr, nullptr, blocks};
  CK(cudaMalloc(&r.sm, blocks * sizeof(int)));
  CK(cudaMalloc(&r.start, blocks * sizeof(uint64_t)));
  CK(cudaMemset(r.sm, 0xff, blocks * sizeof(int)));
  return r;
}
void print_sms(const char* what, const std::set<int>& s) {
  std::printf("%s: %zu SMs (", what, s.size());
  int shown = 0;
  for (int v : s) {
    if (shown++ == 12) {
      std::printf(" ...");
      break;
    }
    std::printf("%s%d", shown > 1 ? " " : "", v);
  }
  std::printf(")\n");
}
bool disjoint(const std::set<int>& a, const std::set<int>& b) {
  for (int v : a)
    if (b.count(v)) return false;
  return true;
}

int main() {
  CK(cudaFree(nullptr));  // the primary context
  CU(cuInit(0));
  CUdevice dev;
  CU(cuDeviceGet(&dev, 0));
  CUdevResource all;
  CU(cuDeviceGetDevResource(dev, &all, CU_DEV_RESOURCE_TYPE_SM));
  std::printf("1. SMs %u, minimum partition %u, co-scheduled alignment %u\n", all.sm.smCount,
              all.sm.minSmPartitionSize, all.sm.smCoscheduledAlignment);
  CUdevResource part, rest;
  unsigned groups = 1;
  CU(cuDevSmResourceSplitByCount(&part, &groups, &all, &rest, 0, 16));
  std::printf("   split by 16: %u group of %u SMs, %u remaining\n", groups, part.sm.smCount, rest.sm.smCount);
  CUdevResourceDesc dpart, drest;
  CU(cuDevResourceGenerateDesc(&dpart, &part, 1));
  CU(cuDevResourceGenerateDesc(&drest, &rest, 1));
  CUgreenCtx gpart, grest;
  CU(cuGreenCtxCreate(&gpart, dpart, dev, CU_GREEN_CTX_DEFAULT_STREAM));
  CU(cuGreenCtxCreate(&grest, drest, dev, CU_GREEN_CTX_DEFAULT_STREAM));
  CUstream spart, srest;
  CU(cuGreenCtxStreamCreate(&spart, gpart, CU_STREAM_NON_BLOCKING, 0));
  CU(cuGreenCtxStreamCreate(&srest, grest, CU_STREAM_NON_BLOCKING, 0));
  cudaStream_t main_s, plain_a, plain_b;
  CK(cudaStreamCreateWithFlags(&main_s, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&plain_a, cudaStreamNonBlocking));
  CK(cudaStreamCreateWithFlags(&plain_b, cudaStreamNonBlocking));

  // 2. Direct launches: 264 blocks of 32 threads on each partition's stream.
  const int B = 264;
  Run ra = make_run(B), rb = make_run(B), rm = make_run(B);
  where<<<B, 32, 0, reinterpret_cast<cudaStream_t>(spart)>>>(ra.sm, ra.start, 20000);
  where<<<B, 32, 0, reinterpret_cast<cudaStream_t>(srest)>>>(rb.sm, rb.start, 20000);
  cudaError_t e = cudaDeviceSynchronize();
  std::printf("2. direct launches on the green streams: %s\n", cudaGetErrorString(e));
  if (e != cudaSuccess) return 1;
  const std::set<int> sa = ra.sms(), sb = rb.sms();
  print_sms("   16-SM partition ran on", sa);
  print_sms("   the rest ran on", sb);
  std::printf("   disjoint: %s\n", disjoint(sa, sb) ? "yes" : "NO");

  // 2b. A captured graph: primary stream -> fork to both green streams -> join -> a primary kernel.
  CK(cudaMemset(ra.sm, 0xff, B * sizeof(int)));
  CK(cudaMemset(rb.sm, 0xff, B * sizeof(int)));
  cudaEvent_t fork, ja, jb;
  CK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  CK(cudaEventCreateWithFlags(&ja, cudaEventDisableTiming));
  CK(cudaEventCreateWithFlags(&jb, cudaEventDisableTiming));
  cudaGraph_t g = nullptr;
  e = cudaStreamBeginCapture(main_s, cudaStreamCaptureModeThreadLocal);
  if (e == cudaSuccess) {
    CK(cudaEventRecord(fork, main_s));
    cudaError_t e1 = cudaStreamWaitEvent(reinterpret_cast<cudaStream_t>(spart), fork, 0);
    cudaError_t e2 = cudaStreamWaitEvent(reinterpret_cast<cudaStream_t>(srest), fork, 0);
    where<<<B, 32, 0, reinterpret_cast<cudaStream_t>(spart)>>>(ra.sm, ra.start, 20000);
    cudaError_t e3 = cudaGetLastError();
    where<<<B, 32, 0, reinterpret_cast<cudaStream_t>(srest)>>>(rb.sm, rb.start, 20000);
    cudaError_t e4 = cudaGetLastError();
    cudaEventRecord(ja, reinterpret_cast<cudaStream_t>(spart));
    cudaEventRecord(jb, reinterpret_cast<cudaStream_t>(srest));
    cudaStreamWaitEvent(main_s, ja, 0);
    cudaStreamWaitEvent(main_s, jb, 0);
    where<<<B, 32, 0, main_s>>>(rm.sm, rm.start, 1000);
    e = cudaStreamEndCapture(main_s, &g);
    std::printf("2b. capture: fork waits %s / %s, launches %s / %s, end %s\n", cudaGetErrorString(e1),
                cudaGetErrorString(e2), cudaGetErrorString(e3), cudaGetErrorString(e4), cudaGetErrorString(e));
  } else {
    std::printf("2b. begin capture: %s\n", cudaGetErrorString(e));
  }
  if (e == cudaSuccess && g) {
    cudaGraphExec_t ge;
    e = cudaGraphInstantiate(&ge, g, 0);
    std::printf("    instantiate: %s\n", cudaGetErrorString(e));
    if (e == cudaSuccess) {
      e = cudaGraphLaunch(ge, main_s);
      if (e == cudaSuccess) e = cudaStreamSynchronize(main_s);
      std::printf("    replay: %s\n", cudaGetErrorString(e));
      if (e == cudaSuccess) {
        const std::set<int> ga = ra.sms(), gb = rb.sms(), gm = rm.sms();
        print_sms("    graph: 16-SM partition ran on", ga);
        print_sms("    graph: the rest ran on", gb);
        print_sms("    graph: the primary kernel ran on", gm);
        std::printf("    same SMs as the direct launches: %s / %s; disjoint: %s\n", ga == sa ? "yes" : "no",
                    gb == sb ? "yes" : "no", disjoint(ga, gb) ? "yes" : "NO");
      }
    }
  }
  (void)cudaGetLastError();

  // 3. A programmatic pair on the 16-SM stream, captured.
  {
    Run p1 = make_run(16), p2 = make_run(16);
    cudaGraph_t g3 = nullptr;
    cudaStream_t s = reinterpret_cast<cudaStream_t>(spart);
    e = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    cudaError_t el = cudaSuccess;
    if (e == cudaSuccess) {
      where<<<16, 32, 0, s>>>(p1.sm, p1.start, 5000);
      cudaLaunchAttribute attr{};
      attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
      attr.val.programmaticStreamSerializationAllowed = 1;
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3(16);
      cfg.blockDim = dim3(32);
      cfg.stream = s;
      cfg.attrs = &attr;
      cfg.numAttrs = 1;
      el = cudaLaunchKernelEx(&cfg, where_after, p2.sm, p2.start, int64_t(1000));
      e = cudaStreamEndCapture(s, &g3);
    }
    size_t edges = 0;
    if (e == cudaSuccess && g3) cudaGraphGetEdges(g3, nullptr, nullptr, nullptr, &edges);
    std::printf("3. PDL pair captured on the green stream: launch %s, end %s, %zu edge(s)\n", cudaGetErrorString(el),
                cudaGetErrorString(e), edges);
    if (e == cudaSuccess && g3) {
      cudaGraphExec_t ge3;
      e = cudaGraphInstantiate(&ge3, g3, 0);
      if (e == cudaSuccess) e = cudaGraphLaunch(ge3, s);
      if (e == cudaSuccess) e = cudaStreamSynchronize(s);
      std::printf("   replay: %s; second kernel on %zu SMs\n", cudaGetErrorString(e), e == cudaSuccess ? p2.sms().size() : 0);
    }
    (void)cudaGetLastError();
  }

  // 4. A kernel that fills the SMs it may use (2 blocks of 1024 threads an SM, 200 µs), then a
  //    small one (8 blocks, 5 µs) launched ~20 µs later on another stream: when does it start?
  auto overlap = [&](cudaStream_t big_s, cudaStream_t small_s, int big_blocks, const char* what) {
    Run big = make_run(big_blocks), small = make_run(8);
    CK(cudaDeviceSynchronize());
    where<<<big_blocks, 1024, 0, big_s>>>(big.sm, big.start, 200000);
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::microseconds(20)) {
    }
    where<<<8, 32, 0, small_s>>>(small.sm, small.start, 5000);
    const cudaError_t err = cudaDeviceSynchronize();
    if (err != cudaSuccess) {
      std::printf("4. %s: %s\n", what, cudaGetErrorString(err));
      return;
    }
    const double lag = (static_cast<double>(small.first_start()) - static_cast<double>(big.first_start())) / 1000.0;
    std::printf("4. %s: the small kernel started %.1f us after the big one (which runs 200 us)\n", what, lag);
  };
  overlap(plain_a, plain_b, 2 * static_cast<int>(all.sm.smCount), "plain streams, big on all SMs");
  overlap(reinterpret_cast<cudaStream_t>(srest), reinterpret_cast<cudaStream_t>(spart),
          2 * static_cast<int>(rest.sm.smCount), "green: big on the rest, small on the 16-SM partition");
  return 0;
}
