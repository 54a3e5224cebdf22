// Muon: the hybrid Newton–Schulz schedule against the polynomial it composes (singular
// values land in the band the polynomials predict, singular vectors are kept, the side is
// the smaller Gram matrix), and one Muon step against a scalar float64 implementation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "train/muon.h"

using namespace dsv4;

namespace {

constexpr double kEps32 = std::numeric_limits<float>::epsilon();

// The spec's coefficients, written out here independently of the library.
constexpr double kQuintic[3] = {3.4445, -4.7750, 2.0315};
constexpr double kFinal[3] = {2.0, -1.5, 0.5};

double poly(const double* abc, double s) { return abc[0] * s + abc[1] * s * s * s + abc[2] * s * s * s * s * s; }

// What the schedule does to one normalized singular value (float64).
double predicted_sigma(double s, int quintic_steps, int final_steps) {
  for (int i = 0; i < quintic_steps; ++i) s = poly(kQuintic, s);
  for (int i = 0; i < final_steps; ++i) s = poly(kFinal, s);
  return s;
}

// Row-major double matrix.
struct Mat {
  int64_t rows = 0, cols = 0;
  std::vector<double> a;
  Mat(int64_t r, int64_t c) : rows(r), cols(c), a(r * c, 0.0) {}
  double& operator()(int64_t i, int64_t j) { return a[i * cols + j]; }
  double operator()(int64_t i, int64_t j) const { return a[i * cols + j]; }
};

// A random orthogonal n×n matrix: modified Gram–Schmidt on Gaussian columns.
Mat random_orthogonal(int64_t n, std::mt19937_64& rng) {
  std::normal_distribution<double> nd(0.0, 1.0);
  Mat Q(n, n);
  for (double& v : Q.a) v = nd(rng);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t k = 0; k < j; ++k) {
      double dot = 0;
      for (int64_t i = 0; i < n; ++i) dot += Q(i, j) * Q(i, k);
      for (int64_t i = 0; i < n; ++i) Q(i, j) -= dot * Q(i, k);
    }
    double norm = 0;
    for (int64_t i = 0; i < n; ++i) norm += Q(i, j) * Q(i, j);
    norm = std::sqrt(norm);
    for (int64_t i = 0; i < n; ++i) Q(i, j) /= norm;
  }
  return Q;
}

// X = U diag(sigma) Vᵀ [rows, cols], with U, V random orthogonal.
struct Svd {
  Mat U, V;
  std::vector<double> sigma;
  Mat compose(const std::vector<double>& s) const {
    Mat X(U.rows, V.rows);
    for (int64_t i = 0; i < X.rows; ++i)
      for (int64_t j = 0; j < X.cols; ++j) {
        double acc = 0;
        for (size_t k = 0; k < s.size(); ++k) acc += U(i, k) * s[k] * V(j, k);
        X(i, j) = acc;
      }
    return X;
  }
};

Svd random_svd(int64_t rows, int64_t cols, std::vector<double> sigma, uint64_t seed) {
  std::mt19937_64 rng(seed);
  return Svd{random_orthogonal(rows, rng), random_orthogonal(cols, rng), std::move(sigma)};
}

Tensor to_tensor(const Mat& m) {
  Tensor t({m.rows, m.cols});
  for (size_t i = 0; i < m.a.size(); ++i) t[i] = static_cast<float>(m.a[i]);
  return t;
}

// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (float64).
std::vector<double> jacobi_eigenvalues(Mat A) {
  const int64_t n = A.rows;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) off += A(p, q) * A(p, q);
    if (off < 1e-30) break;
    for (int64_t p = 0; p < n; ++p)
      for (int64_t q = p + 1; q < n; ++q) {
        if (std::abs(A(p, q)) < 1e-300) continue;
        const double theta = (A(q, q) - A(p, p)) / (2 * A(p, q));
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // A ← A·J
          const double akp = A(k, p), akq = A(k, q);
          A(k, p) = c * akp - s * akq;
          A(k, q) = s * akp + c * akq;
        }
        for (int64_t k = 0; k < n; ++k) {  // A ← Jᵀ·A
          const double apk = A(p, k), aqk = A(q, k);
          A(p, k) = c * apk - s * aqk;
          A(q, k) = s * apk + c * aqk;
        }
      }
  }
  std::vector<double> ev(n);
  for (int64_t i = 0; i < n; ++i) ev[i] = A(i, i);
  std::sort(ev.begin(), ev.end());
  return ev;
}

// Gram matrix on the smaller side (O Oᵀ for wide, Oᵀ O for tall), float64.
Mat small_gram(const Tensor& O) {
  const int64_t n = O.dim(0), m = O.dim(1);
  const bool wide = n <= m;
  const int64_t k = wide ? n : m, len = wide ? m : n;
  auto at = [&](int64_t i, int64_t l) { return static_cast<double>(wide ? O[i * m + l] : O[l * m + i]); };
  Mat G(k, k);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double acc = 0;
      for (int64_t l = 0; l < len; ++l) acc += at(i, l) * at(j, l);
      G(i, j) = acc;
    }
  return G;
}

std::vector<double> singular_values(const Tensor& O) {
  std::vector<double> ev = jacobi_eigenvalues(small_gram(O));
  for (double& e : ev) e = std::sqrt(std::max(e, 0.0));
  return ev;
}

std::vector<double> log_spaced(double lo, double hi, int k) {
  std::vector<double> s(k);
  for (int i = 0; i < k; ++i) s[i] = lo * std::pow(hi / lo, static_cast<double>(i) / (k - 1));
  return s;
}

double frobenius(const std::vector<double>& s) {
  double sq = 0;
  for (double v : s) sq += v * v;
  return std::sqrt(sq);
}

struct NsCase {
  const char* name;
  int64_t rows, cols;
  double sigma_lo;  // singular values log-spaced in [sigma_lo, 1]
};

const NsCase kCases[] = {
    {"square_well", 32, 32, 0.5},  {"square_ill", 32, 32, 1e-3}, {"wide_well", 24, 64, 0.5},
    {"wide_ill", 24, 64, 1e-3},    {"tall_well", 64, 24, 0.5},   {"tall_ill", 64, 24, 1e-3},
};

// Band of the polynomials (float64 scan of the scalar maps, and the algebra below): for a
// normalized singular value s in [1e-4, 1], 8 quintic steps give φ⁸(s) in [0.6818, 1.2024]
// (φ rises like 3.4445·s from 0, so ≤ 8 steps lift 1e-4 into the band; the band itself is
// mapped into itself: min φ on [0.68, 1.21] is 0.6818, max φ on [0, 1.21] is 1.2024). Then
// ψ(s) − 1 = (s − 1)²(0.5s³ + s² − 1) with ψ = (2, −1.5, 0.5): ψ(1) = 1, ψ'(1) = 0, and
// ψ ≥ 1 wherever 0.5s³ + s² ≥ 1 (s ≥ 0.8393). ψ maps [0.6818, 1.2024] into [0.961, 1.06],
// above 0.8393, so the second ψ lands in [1, 1.00202].
constexpr double kQuinticLo = 0.6818, kQuinticHi = 1.2024;
constexpr double kFinalLo = 1.0, kFinalHi = 1.00202;

}  // namespace

TEST(Muon, ScheduleIsTheSpecs) {
  const std::vector<NsStep> s = hybrid_ns_schedule();
  ASSERT_EQ(s.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    const double* want = i < 8 ? kQuintic : kFinal;
    EXPECT_EQ(s[i].a, static_cast<float>(want[0])) << i;
    EXPECT_EQ(s[i].b, static_cast<float>(want[1])) << i;
    EXPECT_EQ(s[i].c, static_cast<float>(want[2])) << i;
  }
}

// The band constants above hold for the scalar maps (a check of the comment's algebra).
TEST(Muon, PolynomialBandsHold) {
  for (double s : log_spaced(1e-4, 1.0, 20001)) {
    const double q = predicted_sigma(s, 8, 0), f = predicted_sigma(s, 8, 2);
    ASSERT_GE(q, kQuinticLo) << s;
    ASSERT_LE(q, kQuinticHi) << s;
    ASSERT_GE(f, kFinalLo - 1e-15) << s;
    ASSERT_LE(f, kFinalHi) << s;
  }
}

TEST(Muon, NewtonSchulzSingularValuesLandInTheBand) {
  const std::vector<NsStep> full = hybrid_ns_schedule();
  const std::vector<NsStep> quintic(full.begin(), full.begin() + 8);
  for (const NsCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const int64_t k = std::min(c.rows, c.cols);
    Svd svd = random_svd(c.rows, c.cols, log_spaced(c.sigma_lo, 1.0, static_cast<int>(k)), 7);
    const Tensor X = to_tensor(svd.compose(svd.sigma));
    const double fro = frobenius(svd.sigma);
    ASSERT_GE(svd.sigma.front() / fro, 1e-4);  // inside the bands' domain

    // After the 8 quintic steps float32 errors have not been contracted yet; they stay far
    // below the band's width, so 1e-3 only separates "in the band" from "not".
    for (double s : singular_values(newton_schulz(X, quintic))) {
      EXPECT_GE(s, kQuinticLo - 1e-3);
      EXPECT_LE(s, kQuinticHi + 1e-3);
    }

    // Full schedule: ψ contracts earlier errors quadratically, so what is left is the last
    // iteration's float32 rounding: ≤ (|a| + |b| + |c|) = 4 terms, each a sum of ≤ 64
    // products (√64 = 8 growth) and a factor 2 for the input's rounding: 64·eps32.
    const double tol = 64 * kEps32;
    const Tensor O = hybrid_newton_schulz(X);
    ASSERT_EQ(O.shape, X.shape);
    const std::vector<double> sv = singular_values(O);
    std::vector<double> want;
    for (double s : svd.sigma) want.push_back(predicted_sigma(s / (fro + 1e-7), 8, 2));
    std::sort(want.begin(), want.end());
    for (size_t i = 0; i < sv.size(); ++i) {
      EXPECT_GE(sv[i], kFinalLo - tol);
      EXPECT_LE(sv[i], kFinalHi + tol);
      EXPECT_NEAR(sv[i], want[i], tol) << i;
    }

    // Orthogonality on the smaller side: eig(O Oᵀ − I) = σ² − 1.
    Mat G = small_gram(O);
    for (int64_t i = 0; i < k; ++i) G(i, i) -= 1.0;
    double ortho = 0;
    for (double e : jacobi_eigenvalues(G)) ortho = std::max(ortho, std::abs(e));
    EXPECT_LE(ortho, kFinalHi * kFinalHi - 1 + 3 * tol);
  }
}

namespace {

// Hybrid Newton–Schulz in plain loops, in T precision: X [n, m] -> O [n, m].
template <typename T>
std::vector<T> naive_ns(const std::vector<T>& X, int64_t n, int64_t m) {
  // Work on the wide side: Y [r, c] with r <= c.
  const bool tall = n > m;
  const int64_t r = tall ? m : n, c = tall ? n : m;
  std::vector<T> Y(r * c);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) Y[i * c + j] = tall ? X[j * m + i] : X[i * m + j];
  T sq = 0;
  for (T v : Y) sq += v * v;
  const T inv = T(1) / (std::sqrt(sq) + T(1e-7));
  for (T& v : Y) v *= inv;
  std::vector<T> A(r * r), B(r * r), Z(r * c);
  for (int it = 0; it < 10; ++it) {
    // the float32 coefficients, as the library stores them
    const double* abc = it < 8 ? kQuintic : kFinal;
    const T a = static_cast<float>(abc[0]), b = static_cast<float>(abc[1]), cc = static_cast<float>(abc[2]);
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < r; ++j) {
        T acc = 0;
        for (int64_t l = 0; l < c; ++l) acc += Y[i * c + l] * Y[j * c + l];
        A[i * r + j] = acc;
      }
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < r; ++j) {
        T acc = 0;
        for (int64_t l = 0; l < r; ++l) acc += A[i * r + l] * A[l * r + j];
        B[i * r + j] = b * A[i * r + j] + cc * acc;
      }
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) {
        T acc = 0;
        for (int64_t l = 0; l < r; ++l) acc += B[i * r + l] * Y[l * c + j];
        Z[i * c + j] = a * Y[i * c + j] + acc;
      }
    std::swap(Y, Z);
  }
  std::vector<T> O(n * m);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) O[i * m + j] = tall ? Y[j * c + i] : Y[i * c + j];
  return O;
}

// One Muon step in plain loops, in T precision: the spec's formulas one by one.
template <typename T>
void naive_muon_step(std::vector<T>& W, const std::vector<T>& G, std::vector<T>& M, int64_t n,
                     int64_t m, T lr, T mu, T gamma, T lambda) {
  std::vector<T> X(n * m);
  for (int64_t i = 0; i < n * m; ++i) {
    M[i] = mu * M[i] + G[i];
    X[i] = mu * M[i] + G[i];
  }
  const std::vector<T> O = naive_ns(X, n, m);
  const T scale = std::sqrt(static_cast<T>(std::max(n, m))) * gamma;
  for (int64_t i = 0; i < n * m; ++i) W[i] = W[i] * (T(1) - lr * lambda) - lr * O[i] * scale;
}

template <typename T>
std::vector<T> cast(const std::vector<float>& v) {
  return std::vector<T>(v.begin(), v.end());
}

// Relative error of the update W_new − W_old against the float64 update.
template <typename T>
double update_error(const std::vector<T>& got, const std::vector<double>& want, const std::vector<float>& w0) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double du = static_cast<double>(got[i]) - w0[i], dw = want[i] - w0[i];
    err += (du - dw) * (du - dw);
    ref += dw * dw;
  }
  return std::sqrt(err / ref);
}

}  // namespace

// NS acts on singular values only: O = U·f(Σ/‖X‖)·Vᵀ, vectors kept (a wrong transpose or a
// wrong side would mix them).
TEST(Muon, NewtonSchulzKeepsSingularVectors) {
  for (const NsCase& c : kCases) {
    SCOPED_TRACE(c.name);
    const int64_t k = std::min(c.rows, c.cols);
    Svd svd = random_svd(c.rows, c.cols, log_spaced(c.sigma_lo, 1.0, static_cast<int>(k)), 11);
    const Tensor X = to_tensor(svd.compose(svd.sigma));
    const Tensor O = hybrid_newton_schulz(X);
    const double fro = frobenius(svd.sigma);
    std::vector<double> f;
    for (double s : svd.sigma) f.push_back(predicted_sigma(s / (fro + 1e-7), 8, 2));
    const Mat want = svd.compose(f);
    const std::vector<float> O32 = naive_ns(X.data, c.rows, c.cols);
    auto rel_err = [&](const std::vector<float>& got) {
      double err = 0, ref = 0;
      for (size_t i = 0; i < want.a.size(); ++i) {
        err += (got[i] - want.a[i]) * (got[i] - want.a[i]);
        ref += want.a[i] * want.a[i];
      }
      return std::sqrt(err / ref);
    };
    // Rule: at most 2× the error of the float32 loops (same precision, other summation order).
    const double err = rel_err(O.data), err32 = rel_err(O32);
    EXPECT_LE(err, std::max(2 * err32, 16 * kEps32)) << "float32 loops: " << err32;
  }
}

// Working on the smaller Gram side means a tall X is computed as its (wide) transpose:
// NS(Xᵀ) and NS(X)ᵀ are the very same float computation.
TEST(Muon, NewtonSchulzOfTransposeIsTransposeBitwise) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Tensor X({40, 12});
  for (float& v : X.data) v = nd(rng);
  Tensor Xt({12, 40});
  for (int64_t i = 0; i < 40; ++i)
    for (int64_t j = 0; j < 12; ++j) Xt[j * 40 + i] = X[i * 12 + j];
  const Tensor O = hybrid_newton_schulz(X), Ot = hybrid_newton_schulz(Xt);
  ASSERT_EQ(O.shape, (Shape{40, 12}));
  ASSERT_EQ(Ot.shape, (Shape{12, 40}));
  for (int64_t i = 0; i < 40; ++i)
    for (int64_t j = 0; j < 12; ++j) ASSERT_EQ(O[i * 12 + j], Ot[j * 40 + i]) << i << "," << j;
}

TEST(Muon, NewtonSchulzOfZeroIsZero) {
  const Tensor O = hybrid_newton_schulz(Tensor({3, 5}));
  for (float v : O.data) EXPECT_EQ(v, 0.0f);
}

TEST(Muon, RejectsNonMatrices) {
  Tensor W({4}), G({4}), M({4});
  EXPECT_THROW(muon_step(W, G, M, 0.1f, MuonConfig{}), Error);
  Tensor W2({2, 3}), G2({3, 2}), M2({2, 3});
  EXPECT_THROW(muon_step(W2, G2, M2, 0.1f, MuonConfig{}), Error);
}


// One Muon step (from a non-zero momentum) against the float64 loops. Rule: the library's
// error is at most 2× that of the same loops run in float32 (BLAS sums in a different order),
// with a floor of 16·eps32 for the case where the float32 loops happen to be very close.
TEST(Muon, StepMatchesScalarFloat64Reference) {
  const struct { int64_t n, m; } shapes[] = {{24, 40}, {40, 24}, {16, 16}};
  for (const auto& sh : shapes) {
    SCOPED_TRACE(std::to_string(sh.n) + "x" + std::to_string(sh.m));
    std::mt19937_64 rng(100 + sh.n);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    Tensor W({sh.n, sh.m}), G({sh.n, sh.m}), M({sh.n, sh.m});
    // W small, so that its own rounding (eps32·|W|) stays far below the update lr·0.18 and
    // the comparison sees the update's errors; the decay term lr·λ·W still counts.
    for (float& v : W.data) v = 0.01f * nd(rng);
    for (float& v : G.data) v = nd(rng);
    for (float& v : M.data) v = 0.5f * nd(rng);
    const MuonConfig cfg;
    const float lr = 0.05f;
    const std::vector<float> w0 = W.data, m0 = M.data;

    std::vector<double> W64 = cast<double>(w0), M64 = cast<double>(m0);
    naive_muon_step<double>(W64, cast<double>(G.data), M64, sh.n, sh.m, lr, cfg.momentum,
                            cfg.update_scale, cfg.weight_decay);
    std::vector<float> W32 = w0, M32 = m0;
    naive_muon_step<float>(W32, G.data, M32, sh.n, sh.m, lr, cfg.momentum, cfg.update_scale,
                           cfg.weight_decay);

    muon_step(W, G, M, lr, cfg);
    const double err = update_error(W.data, W64, w0), err32 = update_error(W32, W64, w0);
    EXPECT_LE(err, std::max(2 * err32, 16 * kEps32)) << "float32 loops: " << err32;
    for (size_t i = 0; i < M.data.size(); ++i)  // a product and a sum: two roundings of their terms
      EXPECT_NEAR(M[i], M64[i], kEps32 * (cfg.momentum * std::abs(m0[i]) + std::abs(G[i]))) << i;
  }
}

// γ = 0.18 with sqrt(max(n, m)) gives every full-rank update an RMS of 0.18·η (σ(O') ≈ 1 on
// min(n, m) directions), plus the decay term.
TEST(Muon, UpdateRmsIsPointEighteenTimesLr) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Tensor W({48, 20}), G({48, 20}), M({48, 20});
  for (float& v : G.data) v = nd(rng);
  MuonConfig cfg;
  cfg.weight_decay = 0.0f;
  const float lr = 0.01f;
  muon_step(W, G, M, lr, cfg);
  double sq = 0;
  for (float v : W.data) sq += static_cast<double>(v) * v;
  const double rms = std::sqrt(sq / W.numel()) / lr;
  // σ ∈ [1, 1.00202] on 20 of 48 directions: RMS = 0.18·sqrt(48)·sqrt(Σσ²/(48·20)).
  const double lo = 0.18, hi = lo * kFinalHi;
  EXPECT_GE(rms, lo * (1 - 64 * kEps32));
  EXPECT_LE(rms, hi * (1 + 64 * kEps32));
}
