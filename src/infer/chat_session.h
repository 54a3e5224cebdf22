// A multi-turn chat over one Generator: the conversation is kept as messages and the
// whole of it is encoded with the DeepSeek-V4 chat format (io/chat_encoding.h) each turn.
//
// Which turns reuse the decoding state (the Generator prefills only what extends the
// tokens it consumed):
// - chat mode: an earlier assistant turn renders as "content<EOS>", exactly what was
//   generated after "<｜Assistant｜></think>", so the next prompt extends the previous
//   prompt and completion: each turn prefills only its new tokens.
// - thinking mode (the official format, drop_thinking): earlier turns lose their reasoning
//   and their "<think>" becomes "</think>", so the prompt changes before the last reply and
//   every turn re-prefills the whole conversation. With drop_thinking = false the
//   reasoning is kept and the state is reused as in chat mode.
// Replies are stored verbatim (not parsed), so even an untrained model's garbage renders
// back to what it generated. It still re-prefills when the reply's text does not encode
// back to the same ids (a non-canonical BPE split) or was cut by a stop string.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "infer/generate.h"
#include "io/chat_encoding.h"

namespace dsv4 {

class ChatSession {
 public:
  // `system`: an optional system message put first.
  ChatSession(Generator& generator, const Tokenizer& tokenizer, ChatMode mode, std::string system = "",
              ChatEncodeOptions encode_options = {});

  // Adds a user message, generates the assistant's reply (streamed through on_text) and
  // adds it to the conversation. On an error the conversation is left as it was.
  GenerateResult reply(const std::string& user_text, const TextSink& on_text = {});

  void reset();  // back to the system message alone, and a fresh sequence
  const nlohmann::ordered_json& messages() const { return messages_; }

 private:
  nlohmann::ordered_json assistant_message(const GenerateResult& r) const;

  Generator& generator_;
  const Tokenizer& tokenizer_;
  ChatMode mode_;
  std::string system_;
  ChatEncodeOptions encode_options_;
  nlohmann::ordered_json messages_;
};

}  // namespace dsv4
