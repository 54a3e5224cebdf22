// Dense GEMMs through cuBLASLt, row-major: y [M, N] = x [M, K] · W [N, K]ᵀ (+ beta · y).
//   F32:      x, W float32; float32 arithmetic (no TF32): the parity mode.
//   BF16:     x, W bf16; float32 accumulation and output.
//   FP8Block: x, W e4m3; W scaled per 128×128 block (w_scale [⌈N/128⌉, ⌈K/128⌉] row-major, the
//             checkpoint's layout as float32), x per 1×128 block (x_scale [K/128][M], M contiguous);
//             float32 accumulation and output. Needs K % 512 == 0 and N % 128 == 0.
// One Blas per stream user; plans (descriptors + chosen algorithm) are cached per shape.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include <cuda_runtime_api.h>

#include "cuda/buffer.h"

namespace dsv4::cuda {

enum class GemmKind { F32, BF16, FP8Block };
const char* gemm_kind_name(GemmKind k);

struct GemmArgs {
  GemmKind kind = GemmKind::F32;
  int64_t M = 0, N = 0, K = 0;
  const void* x = nullptr;
  int64_t ldx = 0;
  const float* x_scale = nullptr;
  const void* w = nullptr;
  int64_t ldw = 0;
  const float* w_scale = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
  float beta = 0.0f;
};

class Blas {
 public:
  explicit Blas(size_t workspace_bytes = size_t(32) << 20);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  void gemm(const GemmArgs& a, cudaStream_t stream);
  // Whether this cuBLASLt offers block-scaled FP8 (Hopper, cuBLAS >= 12.9), and the multiple of
  // which the row count M of such a GEMM must be (callers pad); probed once (0: none).
  bool fp8_block_supported() { return fp8_row_align() > 0; }
  int fp8_row_align();

 private:
  struct Plan;
  using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool>;
  Plan& plan(const GemmArgs& a);
  cublasLtHandle_t handle_ = nullptr;
  DeviceArray<char> workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  int fp8_align_ = -1;
};

}  // namespace dsv4::cuda
