#include "train/muon.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

namespace dsv4 {

std::vector<NsStep> hybrid_ns_schedule() {
  std::vector<NsStep> s(8, NsStep{3.4445f, -4.7750f, 2.0315f});
  s.insert(s.end(), 2, NsStep{2.0f, -1.5f, 0.5f});
  return s;
}

namespace {

Tensor transposed(const Tensor& X) {
  const int64_t n = X.dim(0), m = X.dim(1);
  Tensor T({m, n});
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) T[j * n + i] = X[i * m + j];
  return T;
}

// X [r, c] with r <= c, already normalized; iterates in place.
void iterate_wide(Tensor& X, const std::vector<NsStep>& schedule) {
  const int r = static_cast<int>(X.dim(0)), c = static_cast<int>(X.dim(1));
  Tensor A({r, r}), AA({r, r}), B({r, r}), Y({r, c});
  for (const NsStep& s : schedule) {
    // A = X Xᵀ [r, r]; B = b·A + c·A² [r, r]; X ← a·X + B X
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r, r, c, 1.0f, X.ptr(), c, X.ptr(), c,
                0.0f, A.ptr(), r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, r, r, 1.0f, A.ptr(), r, A.ptr(), r,
                0.0f, AA.ptr(), r);
    for (int64_t i = 0; i < A.numel(); ++i) B[i] = s.b * A[i] + s.c * AA[i];
    Y.data = X.data;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, c, r, 1.0f, B.ptr(), r, X.ptr(), c,
                s.a, Y.ptr(), c);
    std::swap(X.data, Y.data);
  }
}

}  // namespace

Tensor newton_schulz(const Tensor& X, const std::vector<NsStep>& schedule) {
  DSV4_CHECK(X.rank() == 2, "muon", "Newton-Schulz needs a matrix, got shape ", shape_str(X.shape));
  const bool tall = X.dim(0) > X.dim(1);  // X·Xᵀ is the larger Gram matrix: work on Xᵀ
  Tensor W = tall ? transposed(X) : X;
  double sq = 0.0;
  for (float v : W.data) sq += static_cast<double>(v) * v;
  const float inv = static_cast<float>(1.0 / (std::sqrt(sq) + 1e-7));
  for (float& v : W.data) v *= inv;
  if (W.numel() > 0) iterate_wide(W, schedule);
  return tall ? transposed(W) : W;
}

Tensor hybrid_newton_schulz(const Tensor& X) { return newton_schulz(X, hybrid_ns_schedule()); }

void muon_step(Tensor& W, const Tensor& G, Tensor& M, float lr, const MuonConfig& cfg) {
  DSV4_CHECK(W.rank() == 2, "muon", "Muon updates matrices, got shape ", shape_str(W.shape));
  DSV4_CHECK(G.shape == W.shape && M.shape == W.shape, "muon", "weight ", shape_str(W.shape),
             ", gradient ", shape_str(G.shape), " and momentum ", shape_str(M.shape),
             " must have one shape");
  const float mu = cfg.momentum;
  Tensor nesterov(W.shape);
  for (int64_t i = 0; i < W.numel(); ++i) {
    M[i] = mu * M[i] + G[i];  // a plain sum, not an EMA
    nesterov[i] = mu * M[i] + G[i];
  }
  const Tensor O = hybrid_newton_schulz(nesterov);
  const float scale = std::sqrt(static_cast<float>(std::max(W.dim(0), W.dim(1)))) * cfg.update_scale;
  const float decay = 1.0f - lr * cfg.weight_decay;
  for (int64_t i = 0; i < W.numel(); ++i) W[i] = W[i] * decay - lr * (O[i] * scale);
}

}  // namespace dsv4
