// Float64 central finite differences for gradient checks.
//
// The rule: for a loss L(x) computed in float64 and its analytic gradient g, the
// central difference (L(x + h e_i) − L(x − h e_i)) / 2h differs from ∂L/∂x_i by the
// truncation h²·L'''/6 plus the rounding ε·|L|/h (ε = 2^−52). With h = 1e-6 and |L|, L''' of
// order one both are ~1e-10, five orders of magnitude below the 1e-5 threshold used here, while
// a wrong derivative (a missing term, a wrong sign, a wrong index) is off by O(1) relative.
// The error is taken over the whole tensor: ‖g − g_fd‖ / ‖g_fd‖.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace dsv4::test {

inline constexpr double kFdStep = 1e-6;
inline constexpr double kFdRelTol = 1e-5;

// ‖analytic − fd‖ / ‖fd‖ over the given indices of x (all when `indices` is empty).
inline double fd_rel_error(const std::function<double()>& loss, std::vector<double>& x,
                           const std::vector<double>& analytic, std::vector<int64_t> indices = {},
                           double h = kFdStep) {
  if (indices.empty())
    for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i) indices.push_back(i);
  double num = 0, den = 0;
  for (int64_t i : indices) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss();
    x[i] = x0 - h;
    const double lm = loss();
    x[i] = x0;
    const double fd = (lp - lm) / (2 * h);
    num += (analytic[i] - fd) * (analytic[i] - fd);
    den += fd * fd;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

inline std::vector<double> randn(int64_t n, std::mt19937& rng, double stddev = 1.0) {
  std::normal_distribution<double> nd(0.0, stddev);
  std::vector<double> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace dsv4::test
