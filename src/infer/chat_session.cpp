#include "infer/chat_session.h"

#include "core/error.h"

namespace dsv4 {

using nlohmann::ordered_json;

ChatSession::ChatSession(Generator& generator, const Tokenizer& tokenizer, ChatMode mode, std::string system,
                         ChatEncodeOptions encode_options)
    : generator_(generator),
      tokenizer_(tokenizer),
      mode_(mode),
      system_(std::move(system)),
      encode_options_(encode_options) {
  reset();
}

void ChatSession::reset() {
  messages_ = ordered_json::array();
  if (!system_.empty()) messages_.push_back({{"role", "system"}, {"content", system_}});
  generator_.reset();
}

ordered_json ChatSession::assistant_message(const GenerateResult& r) const {
  // The completion as generated (special tokens included, raw bytes, not the lossy UTF-8
  // shown) parses into reasoning and content; after a stop string only what was shown exists.
  const std::string raw = r.reason == StopReason::StopString ? r.text : tokenizer_.decode(r.ids);
  std::vector<int32_t> body = r.ids;
  if (r.reason == StopReason::Eos) body.pop_back();
  try {
    ParsedCompletion parsed = parse_completion(raw, mode_);
    if (parsed.tool_calls.empty()) {
      ordered_json msg = {{"role", "assistant"}, {"content", parsed.content}};
      if (mode_ == ChatMode::Thinking) msg["reasoning_content"] = parsed.reasoning;
      return msg;
    }
  } catch (const Error&) {
    // A reply that breaks the format (an untrained model's) is kept verbatim as content,
    // so that the next prompt still extends what the model consumed.
  }
  return {{"role", "assistant"},
          {"content", r.reason == StopReason::StopString ? r.text : tokenizer_.decode(body)}};
}

GenerateResult ChatSession::reply(const std::string& user_text, const TextSink& on_text) {
  messages_.push_back({{"role", "user"}, {"content", user_text}});
  try {
    const std::string prompt = encode_chat(messages_, mode_, encode_options_);
    EncodeOptions eo;
    eo.add_special_tokens = false;  // the chat text carries its own BOS
    const std::vector<int32_t> ids = tokenizer_.encode(prompt, eo);
    GenerateResult r = generator_.generate(ids, on_text);
    messages_.push_back(assistant_message(r));
    return r;
  } catch (...) {
    messages_.erase(messages_.size() - 1);
    throw;
  }
}

}  // namespace dsv4
