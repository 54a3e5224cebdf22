#include "infer/sampling.h"
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>
using namespace dsv4;
int main() {
  const int V = 129280;
  for (float sigma : {3.0f, 8.0f}) {
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, sigma);
  std::vector<float> logits(V);
  for (auto& v : logits) v = nd(rng);
  std::vector<int32_t> seen(500);
  for (auto& s : seen) s = rng() % V;
  for (float tp : {1.0f, 0.95f}) for (int tk : {0, 40}) {
    SamplingParams p; p.temperature = 0.7f; p.top_p = tp; p.top_k = tk; p.repeat_penalty = 1.1f;
    Sampler s(p);
    int32_t acc = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 20; ++i) acc += s.sample(logits, seen);
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 20;
    std::printf("sigma %.0f top_p %.2f top_k %d: %.2f ms per token (%d)\n", sigma, tp, tk, ms, acc);
  }}
}
