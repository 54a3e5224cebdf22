// Text generation over a Model and a Tokenizer: prefill the prompt, then decode one token
// at a time with a Sampler, streaming the text as it comes.
//
// Stopping: at the end-of-sentence token (config eos_token_id; it is not printed), at a
// stop string (text that could still grow into a stop string is held back, and the stop
// string itself is never printed), after max_tokens, or when the context is full.
//
// One sequence, kept across calls: generate(prompt) first checks whether `prompt` extends
// the tokens the sequence has consumed (the previous prompt and what was generated after
// it); if so only the new tail is prefilled, else the state is rebuilt from position 0.
// The decoding state cannot be rewound, so any difference, even one token, means a full
// prefill.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "infer/sampling.h"
#include "io/tokenizer.h"
#include "model/backend.h"
#include "model/model.h"

namespace dsv4 {

struct GenerateOptions {
  SamplingParams sampling;
  int max_tokens = 256;            // generated tokens per call, the EOS included
  std::vector<std::string> stop;   // stop strings (non-empty)
  int64_t ctx = 0;                 // the allowed context in tokens; 0: max_position_embeddings
  // Prompt tokens per forward call; 0: 256 on the CPU oracle, which makes every row's logits,
  // and 8192 through a backend, which makes the last row's only (the chunk then bounds the
  // activations: at 256 a GPU prefill ran 6.6x slower, bench/results/2026-11-30-cuda-30.md).
  int64_t prefill_chunk = 0;
  // Where the forward runs: the CPU (the float32 oracle) or a CUDA backend (f32 or fast; fast
  // reads the stored FP8/FP4 weights of checkpoint_dir when given).
  Device device = Device::Cpu;
  Precision precision = Precision::F32;
  std::string checkpoint_dir;
};

enum class StopReason { Eos, StopString, MaxTokens, ContextFull };
const char* stop_reason_name(StopReason r);  // "eos", "stop string", "max tokens", "context full"

struct GenerateResult {
  std::vector<int32_t> ids;       // every generated id (the EOS or the one completing a stop string included)
  std::string text;               // exactly what was streamed (special tokens skipped, stop string cut)
  StopReason reason = StopReason::MaxTokens;
  int64_t prompt_tokens = 0;      // the prompt's length
  int64_t prefilled_tokens = 0;   // prompt tokens run through the model (fewer when the state was reused)
  int64_t decode_steps = 0;       // single-token forward calls after the prefill
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Receives each piece of text as soon as it is final (valid UTF-8, never part of a stop string).
using TextSink = std::function<void(std::string_view)>;

class Generator {
 public:
  // The tokenizer must fit the model's vocabulary; ids the tokenizer has no token for are
  // never sampled. Options are validated here (an Error names the bad one). The model and
  // the tokenizer are borrowed: they must outlive the generator.
  Generator(const Model& model, const Tokenizer& tokenizer, GenerateOptions options);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;
  // The backend in use, e.g. "cpu f32" or the CUDA backend's description.
  std::string describe() const;

  // A prompt that leaves no room to generate in the allowed context is an Error that gives
  // both numbers. On any error the sequence is reset (the next call prefills from scratch).
  GenerateResult generate(std::span<const int32_t> prompt, const TextSink& on_text = {});

  void reset();  // forget the sequence
  const GenerateOptions& options() const { return options_; }
  int64_t context() const { return ctx_; }
  // The ids the sequence has consumed so far.
  const std::vector<int32_t>& consumed() const { return consumed_; }

 private:
  GenerateResult run(std::span<const int32_t> prompt, const TextSink& on_text);
  // Runs ids through the model in chunks; the logits of the last one ([V]).
  std::vector<float> feed(std::span<const int32_t> ids);

  const Model& model_;
  std::unique_ptr<Backend> backend_;  // null: the CPU model and state_ directly
  int seq_ = -1;                      // the backend's sequence
  const Tokenizer& tokenizer_;
  GenerateOptions options_;
  int64_t ctx_;
  Sampler sampler_;
  std::vector<int32_t> no_token_;  // ids the tokenizer has no text for: never sampled
  SequenceState state_;
  std::vector<int32_t> consumed_;
};

// Cuts streamed text at the first stop string. push() returns what is final: the text up
// to the stop string once one is complete, otherwise everything except the longest tail
// that is still the beginning of some stop string. finish() returns the held-back tail
// when the stream ends without a stop string.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);  // an empty stop string is an Error
  std::string push(std::string_view piece);
  std::string finish();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

// The prompt ids of plain text (no chat format): the text's tokens, after BOS when
// add_bos and the text does not start with it already. An empty result is an Error.
std::vector<int32_t> encode_prompt(const Tokenizer& tokenizer, const ModelConfig& config, std::string_view text,
                                   bool add_bos = true);

// Sampling defaults from a model folder's generation_config.json (temperature, top_p,
// top_k when present; `defaults` otherwise, and when there is no such file).
SamplingParams read_generation_config(const std::string& model_dir, SamplingParams defaults = {});

}  // namespace dsv4
