#include "ops/linear.h"

#include <cblas.h>

namespace dsv4::ops {

static void gemm(const float* x, int64_t T, int64_t in, const float* W, int64_t out, float* y, float beta) {
  if (T == 0 || out == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(out),
              static_cast<int>(in), 1.0f, x, static_cast<int>(in), W, static_cast<int>(in), beta, y,
              static_cast<int>(out));
}

void linear(const float* x, int64_t T, int64_t in, const float* W, int64_t out, float* y) {
  gemm(x, T, in, W, out, y, 0.0f);
}
void linear_acc(const float* x, int64_t T, int64_t in, const float* W, int64_t out, float* y) {
  gemm(x, T, in, W, out, y, 1.0f);
}

Tensor linear(const Tensor& x, const Tensor& W) {
  int64_t in = W.dim(1), out = W.dim(0);
  DSV4_CHECK(x.dim(-1) == in, "linear", "input width ", x.dim(-1), " != weight columns ", in);
  int64_t T = x.numel() / in;
  Shape s = x.shape;
  s.back() = out;
  Tensor y(s);
  linear(x.ptr(), T, in, W.ptr(), out, y.ptr());
  return y;
}

}  // namespace dsv4::ops
