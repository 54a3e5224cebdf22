#include "infer/generate.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace dsv4 {

namespace {

constexpr const char* kWhere = "generate";

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Eos: return "eos";
    case StopReason::StopString: return "stop string";
    case StopReason::MaxTokens: return "max tokens";
    case StopReason::ContextFull: return "context full";
  }
  return "?";
}

StopStringFilter::StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (size_t i = 0; i < stops_.size(); ++i) DSV4_CHECK(!stops_[i].empty(), kWhere, "stop string ", i, " is empty");
}

std::string StopStringFilter::push(std::string_view piece) {
  if (stopped_) return "";
  held_ += piece;
  // The earliest complete stop string wins. Everything before held_ was checked already
  // and holds no stop string, nor the beginning of one that is still open.
  size_t cut = std::string::npos;
  for (const std::string& s : stops_) cut = std::min(cut, held_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, cut);
    held_.clear();
    return out;
  }
  size_t keep = 0;  // the longest tail of held_ that begins some stop string
  for (const std::string& s : stops_)
    for (size_t n = std::min(held_.size(), s.size() - 1); n > keep; --n)
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringFilter::finish() {
  if (stopped_) return "";
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

Generator::Generator(const Model& model, const Tokenizer& tokenizer, GenerateOptions options)
    : model_(model),
      tokenizer_(tokenizer),
      options_(std::move(options)),
      ctx_(options_.ctx > 0 ? options_.ctx : model.config().max_position_embeddings),
      sampler_(options_.sampling),
      state_(model.new_state()) {
  const ModelConfig& c = model.config();
  DSV4_CHECK(tokenizer.vocab_size() <= c.vocab_size, kWhere, "the tokenizer has ", tokenizer.vocab_size(),
             " tokens but the model's vocab_size is ", c.vocab_size, ": they do not belong to the same model");
  DSV4_CHECK(options_.max_tokens > 0, kWhere, "max tokens must be > 0, found ", options_.max_tokens);
  DSV4_CHECK(options_.ctx >= 0, kWhere, "the context (--ctx) must be > 0 (0: the model's limit), found ",
             options_.ctx);
  DSV4_CHECK(options_.ctx <= c.max_position_embeddings, kWhere, "the context (--ctx) ", options_.ctx,
             " exceeds the model's max_position_embeddings (", c.max_position_embeddings, ")");
  DSV4_CHECK(options_.prefill_chunk >= 0, kWhere, "prefill chunk must be >= 0 (0: automatic), found ",
             options_.prefill_chunk);
  StopStringFilter check_stops(options_.stop);
  // Rows of the head past the tokenizer (padding of the embedding table) or in its gaps
  // have no text: sampling one would end in a decode error.
  for (int32_t id = 0; id < c.vocab_size; ++id)
    if (id >= tokenizer.vocab_size() || !tokenizer.id_to_token(id)) no_token_.push_back(id);
  if (options_.device != Device::Cpu || options_.precision != Precision::F32) {
    backend_ = make_backend(options_.device, model, options_.precision, options_.checkpoint_dir);
    seq_ = backend_->new_sequence(ctx_);
  }
}

Generator::~Generator() {
  if (backend_ && seq_ >= 0) backend_->free_sequence(seq_);
}

std::string Generator::describe() const { return backend_ ? backend_->describe() : std::string("cpu f32"); }

void Generator::reset() {
  if (backend_) {
    backend_->free_sequence(seq_);
    seq_ = -1;
    seq_ = backend_->new_sequence(ctx_);
  } else {
    state_ = model_.new_state();
  }
  consumed_.clear();
}

std::vector<float> Generator::feed(std::span<const int32_t> ids) {
  const int64_t V = model_.config().vocab_size;
  const size_t chunk = static_cast<size_t>(options_.prefill_chunk > 0 ? options_.prefill_chunk : backend_ ? 8192 : 256);
  std::vector<float> last;
  for (size_t i = 0; i < ids.size(); i += chunk) {
    const size_t n = std::min(chunk, ids.size() - i);
    std::vector<int64_t> part(ids.begin() + i, ids.begin() + i + n);
    if (backend_) {  // the last token's logits only (the CUDA backend's head runs on that row alone)
      const ForwardOut out = backend_->forward_last({SeqChunk{seq_, std::move(part)}});
      last.assign(out.logits.ptr(), out.logits.ptr() + V);
    } else {
      const ForwardOut out = model_.forward({Chunk{&state_, std::move(part)}});
      last.assign(out.logits.ptr() + (n - 1) * V, out.logits.ptr() + n * V);
    }
    consumed_.insert(consumed_.end(), ids.begin() + i, ids.begin() + i + n);
  }
  return last;
}

GenerateResult Generator::generate(std::span<const int32_t> prompt, const TextSink& on_text) {
  const ModelConfig& c = model_.config();
  const int64_t P = static_cast<int64_t>(prompt.size());
  DSV4_CHECK(P > 0, kWhere, "the prompt is empty");
  DSV4_CHECK(P < ctx_, kWhere, "the prompt is ", P, " tokens but the context holds ", ctx_,
             " tokens, which leaves no room to generate: ",
             ctx_ < c.max_position_embeddings
                 ? str("shorten the prompt or raise --ctx (the model allows up to ", c.max_position_embeddings, ")")
                 : std::string("shorten the prompt (that is the model's max_position_embeddings)"));
  for (int64_t i = 0; i < P; ++i)
    DSV4_CHECK(prompt[i] >= 0 && prompt[i] < c.vocab_size, kWhere, "prompt token ", i, " has id ", prompt[i],
               ", outside the model's vocabulary [0, ", c.vocab_size, ")");
  try {
    return run(prompt, on_text);
  } catch (...) {
    reset();  // the state may have consumed part of a step
    throw;
  }
}

GenerateResult Generator::run(std::span<const int32_t> prompt, const TextSink& on_text) {
  const int64_t P = static_cast<int64_t>(prompt.size());
  GenerateResult r;
  r.prompt_tokens = P;

  const bool extends = consumed_.size() < prompt.size() && std::equal(consumed_.begin(), consumed_.end(), prompt.begin());
  if (!extends) reset();
  const std::span<const int32_t> tail = prompt.subspan(consumed_.size());
  const Clock::time_point t0 = Clock::now();
  std::vector<float> logits = feed(tail);
  r.prefill_seconds = seconds_since(t0);
  r.prefilled_tokens = static_cast<int64_t>(tail.size());

  std::vector<int32_t> seen(prompt.begin(), prompt.end());  // for the repetition penalty
  StreamDecoder decoder(tokenizer_, /*skip_special=*/true);
  StopStringFilter stops(options_.stop);
  auto emit = [&](const std::string& piece) {
    if (piece.empty()) return;
    r.text += piece;
    if (on_text) on_text(piece);
  };
  const int32_t eos = model_.config().eos_token_id;
  const Clock::time_point t1 = Clock::now();
  for (;;) {
    for (int32_t id : no_token_) logits[id] = -std::numeric_limits<float>::infinity();
    const int32_t id = sampler_.sample(logits, seen);
    r.ids.push_back(id);
    seen.push_back(id);
    if (id == eos) {
      r.reason = StopReason::Eos;
      break;
    }
    emit(stops.push(decoder.push(id)));
    if (stops.stopped()) {
      r.reason = StopReason::StopString;
      break;
    }
    const int64_t generated = static_cast<int64_t>(r.ids.size());
    if (generated >= options_.max_tokens) {
      r.reason = StopReason::MaxTokens;
      break;
    }
    // Tokens take positions 0 .. ctx-1; the one just sampled holds position P + generated - 1.
    if (P + generated >= ctx_) {
      r.reason = StopReason::ContextFull;
      break;
    }
    logits = feed(std::span<const int32_t>(&id, 1));
    ++r.decode_steps;
  }
  if (!stops.stopped()) {
    emit(stops.push(decoder.finish()));
    if (stops.stopped()) r.reason = StopReason::StopString;
    else emit(stops.finish());
  }
  r.decode_seconds = seconds_since(t1);
  return r;
}

std::vector<int32_t> encode_prompt(const Tokenizer& tokenizer, const ModelConfig& config, std::string_view text,
                                   bool add_bos) {
  EncodeOptions eo;
  eo.add_special_tokens = false;  // BOS is added here, once, whatever the post-processor says
  std::vector<int32_t> ids = tokenizer.encode(text, eo);
  if (add_bos && (ids.empty() || ids[0] != config.bos_token_id)) ids.insert(ids.begin(), config.bos_token_id);
  DSV4_CHECK(!ids.empty(), kWhere, "the prompt is empty");
  return ids;
}

SamplingParams read_generation_config(const std::string& model_dir, SamplingParams defaults) {
  const std::string path = (std::filesystem::path(model_dir) / "generation_config.json").string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return defaults;
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path, str("not valid JSON: ", e.what()));
  }
  DSV4_CHECK(j.is_object(), path, "must be a JSON object, found ", j.type_name());
  auto number = [&](const char* key, auto& out) {
    if (!j.contains(key) || j[key].is_null()) return;
    DSV4_CHECK(j[key].is_number(), path, "key '", key, "' must be a number, found ", j[key].dump());
    out = j[key].get<std::remove_reference_t<decltype(out)>>();
  };
  SamplingParams p = defaults;
  number("temperature", p.temperature);
  number("top_p", p.top_p);
  number("top_k", p.top_k);
  number("repetition_penalty", p.repeat_penalty);
  // Hugging Face's do_sample = false means greedy, whatever the temperature says.
  if (j.contains("do_sample") && j["do_sample"].is_boolean() && !j["do_sample"].get<bool>()) p.temperature = 0;
  try {
    p.validate();
  } catch (const Error& e) {
    throw Error(path, e.what());
  }
  return p;
}

}  // namespace dsv4
