// The DeepSeek-V4 chat prompt format: a conversation (OpenAI-style messages) becomes the
// exact prompt text the model was trained on, and a generated completion parses back into
// reasoning, content and tool calls.
//
// Prompt layout (no separators between messages):
//   <BOS>[system content[\n\n## Tools ...]]
//   [<｜latest_reminder｜>reminder]
//   <｜User｜>user text (tool results merged in as <tool_result>...</tool_result>)
//   <｜Assistant｜><think>  (thinking, current turn) | </think> (chat, or an earlier turn)
//   reasoning</think>content[\n\n<｜DSML｜tool_calls>...</｜DSML｜tool_calls>]<EOS>
// Roles: system, user, assistant, tool, developer (a user turn that may carry tools),
// latest_reminder. Message fields: content, reasoning_content, tool_calls, tools,
// response_format, task (action, query, authority, domain, title, read_url), wo_eos.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4 {

enum class ChatMode { Thinking, Chat };

// "thinking" or "chat"; anything else is an Error naming the accepted values.
ChatMode parse_chat_mode(std::string_view name);

enum class ReasoningEffort {
  Default,  // no prefix
  Max,      // thinking mode only: a fixed instruction prepended to the first message
};

struct ChatEncodeOptions {
  // Strip earlier turns' reasoning (turns before the last user message) in thinking mode.
  // Ignored when any message carries tools: tool use needs the whole chain of reasoning.
  bool drop_thinking = true;
  bool add_bos = true;
  ReasoningEffort reasoning_effort = ReasoningEffort::Default;
};

// conversation: a message list, or {"tools": [...], "messages": [...]}. Request-level tools
// go on a leading system/developer message (replacing its own), else on a new empty system
// message put first. A conversation ending in a user/developer turn gets the assistant
// prefix (the generation prompt); one ending in an assistant turn is a complete transcript.
// ordered_json keeps the key order of tool schemas, which the prompt reproduces verbatim.
// A malformed conversation is an Error naming the message index and the field.
std::string encode_chat(const nlohmann::ordered_json& conversation, ChatMode mode,
                        const ChatEncodeOptions& options = {});

// The same, from JSON text (an Error when it is not JSON).
std::string encode_chat_text(std::string_view json_text, ChatMode mode,
                             const ChatEncodeOptions& options = {});

struct ChatToolCall {
  std::string name;
  nlohmann::ordered_json arguments;  // an object, parameters in the order generated
};

struct ParsedCompletion {
  std::string reasoning;
  std::string content;
  std::vector<ChatToolCall> tool_calls;
  bool finished = false;  // the text ended with the end-of-sentence token
};

// text: what the model generated after the prompt, i.e. after "<｜Assistant｜><think>" in
// thinking mode and after "<｜Assistant｜></think>" in chat mode (a leading <think>,
// </think> or task token is skipped, so the text after "<｜Assistant｜>" works too).
// A truncated generation parses as far as it goes (finished = false; a tool call whose
// invoke block is not closed yet is left out). DSML that breaks the grammar, text after
// the end-of-sentence token, or special tokens inside reasoning/content are an Error.
ParsedCompletion parse_completion(const std::string& text, ChatMode mode);

// JSON text as Python's json.dumps(value, ensure_ascii=False) writes it (", " and ": "
// separators, key order kept, shortest round-trip floats): the prompt's tool schemas and
// non-string tool arguments use this spelling.
std::string python_json_dumps(const nlohmann::ordered_json& value);

}  // namespace dsv4
