// A kernel timeline of any CUDA program, graph replays included (what Nsight Systems would show,
// where it does not run): a CUPTI injection library that records every kernel's start, end and
// stream, written as text at exit. A development aid for the decode step, not part of dsv4.
//   g++ -O2 -shared -fPIC -I/usr/local/cuda/include scripts/experiments/kernel_trace.cpp \
//       -L/usr/local/cuda/lib64 -lcupti -o /tmp/libktrace.so
//   CUDA_INJECTION64_PATH=/tmp/libktrace.so KTRACE_OUT=trace.txt dsv4 bench ...
// Lines: start_ns end_ns stream graph_id grid_x grid_y grid_z name (sorted by the consumer).
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

FILE* out = nullptr;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = 16 << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* r = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) {
    if (r->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && r->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(r);
    std::fprintf(out, "%llu %llu %u %u %d %d %d %s\n", static_cast<unsigned long long>(k->start),
                 static_cast<unsigned long long>(k->end), k->streamId, k->graphId, k->gridX, k->gridY, k->gridZ,
                 k->name ? k->name : "?");
  }
  std::free(buffer);
}

void finish() {
  cuptiActivityFlushAll(1);
  if (out) std::fclose(out);
}

}  // namespace

extern "C" int InitializeInjection() {
  const char* path = std::getenv("KTRACE_OUT");
  out = std::fopen(path ? path : "ktrace.txt", "w");
  if (!out) return 0;
  cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed);
  cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  std::atexit(finish);
  return 1;
}
