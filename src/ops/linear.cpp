#include "ops/linear.h"

#include <cblas.h>

namespace dsv4::ops {

namespace {

// C [M, N] = alpha · op(A) · op(B) + beta · C, row-major.
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(M),
              static_cast<int>(N), static_cast<int>(K), 1.0f, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
              C, static_cast<int>(ldc));
}
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda, const double* B,
          int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(M),
              static_cast<int>(N), static_cast<int>(K), 1.0, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
              C, static_cast<int>(ldc));
}

}  // namespace

template <class S>
void linear(const S* x, int64_t T, int64_t in, const Same<S>* W, int64_t out, S* y) {
  if (T == 0 || out == 0) return;
  gemm(false, true, T, out, in, x, in, W, in, S(0), y, out);
}

template <class S>
void linear_acc(const S* x, int64_t T, int64_t in, const Same<S>* W, int64_t out, S* y) {
  if (T == 0 || out == 0) return;
  gemm(false, true, T, out, in, x, in, W, in, S(1), y, out);
}

template <class S>
void linear_backward(const S* x, int64_t T, int64_t in, const Same<S>* W, int64_t out, const Same<S>* dy,
                     Same<S>* dx, Same<S>* dW) {
  if (T == 0 || out == 0 || in == 0) return;
  if (dx) gemm(false, false, T, in, out, dy, out, W, in, S(1), dx, in);    // dx += dy · W
  if (dW) gemm(true, false, out, in, T, dy, out, x, in, S(1), dW, in);     // dW += dyᵀ · x
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

#define DSV4_LINEAR(S)                                                                                          \
  template void linear<S>(const S*, int64_t, int64_t, const S*, int64_t, S*);                                   \
  template void linear_acc<S>(const S*, int64_t, int64_t, const S*, int64_t, S*);                               \
  template void linear_backward<S>(const S*, int64_t, int64_t, const S*, int64_t, const S*, S*, S*);
DSV4_LINEAR(float)
DSV4_LINEAR(double)

}  // namespace dsv4::ops
