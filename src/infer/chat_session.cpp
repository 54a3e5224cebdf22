#include "infer/chat_session.h"

#include <string_view>

#include "core/error.h"
#include "io/chat_tokens.h"

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
  // The reply is stored verbatim (raw bytes, not the lossy UTF-8 shown), split at the first
  // </think> in thinking mode: the format renders it back as [reasoning</think>]content<EOS>,
  // exactly what was generated, so the next prompt extends what the model consumed. (A
  // parse with parse_completion would drop what an untrained model puts out of place,
  // such as a task token, and with it the reuse.) After a stop string only what was shown
  // exists.
  std::vector<int32_t> body = r.ids;
  if (r.reason == StopReason::Eos) body.pop_back();
  const std::string text = r.reason == StopReason::StopString ? r.text : tokenizer_.decode(body);
  if (mode_ == ChatMode::Chat) return {{"role", "assistant"}, {"content", text}};
  const std::string_view think_end = chat_tokens::kThinkEnd;
  const size_t end = text.find(think_end);
  if (end == std::string::npos)  // the reply ended inside its reasoning
    return {{"role", "assistant"}, {"content", ""}, {"reasoning_content", text}};
  return {{"role", "assistant"},
          {"content", text.substr(end + think_end.size())},
          {"reasoning_content", text.substr(0, end)}};
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
