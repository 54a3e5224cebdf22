// The CUDA forward pass (model.md, all of it) behind the Backend interface: weights and
// per-sequence caches on the GPU, batches of chunks of different lengths (prefill and
// decode alike), the MTP block. No CUDA types here: a CPU-only build compiles this header
// and gets a make_cuda_backend that throws an Error saying the build has no CUDA.
#pragma once
#include <memory>
#include <string>

#include "model/backend.h"

namespace dsv4 {

std::unique_ptr<Backend> make_cuda_backend(const Model& model, Precision precision, const std::string& checkpoint_dir);

}  // namespace dsv4
