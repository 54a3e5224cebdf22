// Sampling the next token from a row of logits.
//
// sample(logits [V], seen ids) applies, in this order (Hugging Face's order):
//   1. repetition penalty (CTRL): for each distinct id in `seen` (the last repeat_last_n
//      of them; 0 = all), a positive logit is divided by the penalty, a negative one
//      multiplied, so a penalty > 1 always lowers a seen token;
//   2. temperature 0 → greedy: the argmax (ties to the lower id), no randomness;
//   3. logits / temperature, then top-k (the k largest; ties to the lower id);
//   4. softmax, then top-p (the smallest set, largest first, whose mass reaches p) and
//      min-p (drop tokens whose probability is below min_p · the largest probability);
//   5. a draw from what is left, renormalized, with the sampler's own mt19937_64.
// Logits of −inf (masked tokens) are never chosen. Each filter keeps at least one token.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace dsv4 {

struct SamplingParams {
  float temperature = 1.0f;     // 0: greedy
  int top_k = 0;                // 0: off
  float top_p = 1.0f;           // 1: off
  float min_p = 0.0f;           // 0: off
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 0;        // how many of the latest seen ids the penalty looks at; 0: all
  uint64_t seed = 0;

  // An out-of-range value is an Error naming the option and its accepted range.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  const SamplingParams& params() const { return params_; }

  // The next token id for one row of logits; `seen` are the ids before it (prompt and
  // generated so far), for the repetition penalty.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> seen = {});

  // The distribution step 5 draws from: probabilities [V] after every filter (zeros for
  // dropped tokens, summing to 1). Greedy gives a one-hot row. No randomness is used.
  std::vector<double> distribution(std::span<const float> logits, std::span<const int32_t> seen = {}) const;

  // The logits after the repetition penalty (step 1).
  std::vector<float> penalized(std::span<const float> logits, std::span<const int32_t> seen) const;

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace dsv4
