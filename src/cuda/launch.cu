#include "cuda/launch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace dsv4::cuda {

namespace {
std::atomic<bool>& pdl_flag() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("DSV4_PDL");
    return !(v && std::strcmp(v, "0") == 0);
  }()};
  return on;
}
}  // namespace

bool pdl_enabled() { return pdl_flag().load(std::memory_order_relaxed); }
void set_pdl(bool on) { pdl_flag().store(on, std::memory_order_relaxed); }

int launch_attributes(cudaStream_t s, cudaLaunchAttribute (&attr)[2]) {
  int n = 0;
  if (pdl_enabled()) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  int priority = 0;
  if (cudaStreamGetPriority(s, &priority) != cudaSuccess) {
    (void)cudaGetLastError();
    priority = 0;
  }
  if (priority != 0) {
    attr[n].id = cudaLaunchAttributePriority;
    attr[n++].val.priority = priority;
  }
  return n;
}

int launch_attributes(cudaStream_t s, unsigned cluster, cudaLaunchAttribute (&attr)[3]) {
  attr[0] = cudaLaunchAttribute{};
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cluster;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cudaLaunchAttribute common[2];
  const int n = launch_attributes(s, common);
  for (int i = 0; i < n; ++i) attr[1 + i] = common[i];
  return 1 + n;
}

}  // namespace dsv4::cuda
