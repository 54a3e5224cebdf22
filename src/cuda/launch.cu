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

}  // namespace dsv4::cuda
