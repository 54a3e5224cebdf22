// make_cuda_backend in a build without CUDA: a clear error instead of a missing symbol.
#include "model/cuda_model.h"

#ifndef DSV4_WITH_CUDA
namespace dsv4 {

std::unique_ptr<Backend> make_cuda_backend(const Model&, Precision, const std::string&) {
  throw Error("device", "this dsv4 was built without CUDA: reconfigure with -DDSV4_CUDA=ON on a machine with nvcc "
                        "(CUDA 12.9 or newer), or use --device cpu");
}

}  // namespace dsv4
#endif
