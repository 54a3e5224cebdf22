// Conversation -> DeepSeek-V4 prompt text. Three passes: read and validate the messages
// (every error names the message index and field), normalize them (request-level tools,
// tool results merged into user turns and ordered like the calls, earlier reasoning
// dropped), then render each message followed by the transition the next one needs.
#include "io/chat_encoding.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>

#include "core/error.h"
#include "io/chat_tokens.h"

namespace dsv4 {

using nlohmann::ordered_json;

ChatMode parse_chat_mode(std::string_view name) {
  if (name == "thinking") return ChatMode::Thinking;
  if (name == "chat") return ChatMode::Chat;
  throw Error("chat", str("unknown chat mode '", name, "': use 'thinking' or 'chat'"));
}

// ---------------------------------------------------------------------------------------
// Python-style JSON text.

namespace {

// Python's float repr: the shortest digits that round-trip, positional for decimal
// exponents in [-4, 16), scientific (at least two exponent digits) otherwise.
std::string python_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-1.2345e+05"
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  size_t e = sci.find('e');
  std::string digits;
  for (size_t i = 0; i < e; ++i)
    if (sci[i] != '.') digits += sci[i];
  int exp10 = std::stoi(sci.substr(e + 1));

  if (exp10 < -4 || exp10 >= 16) {
    std::string mantissa = digits.substr(0, 1);
    if (digits.size() > 1) mantissa += "." + digits.substr(1);
    std::string exp_digits = std::to_string(std::abs(exp10));
    if (exp_digits.size() < 2) exp_digits = "0" + exp_digits;
    return sign + mantissa + "e" + (exp10 < 0 ? "-" : "+") + exp_digits;
  }
  if (exp10 < 0) return sign + "0." + std::string(-exp10 - 1, '0') + digits;
  size_t int_len = static_cast<size_t>(exp10) + 1;
  if (digits.size() <= int_len) return sign + digits + std::string(int_len - digits.size(), '0') + ".0";
  return sign + digits.substr(0, int_len) + "." + digits.substr(int_len);
}

std::string json_string(const std::string& s) {
  try {
    return ordered_json(s).dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error("chat", str("a string is not valid UTF-8: ", e.what()));
  }
}

void dump_python(const ordered_json& v, std::string& out) {
  switch (v.type()) {
    case ordered_json::value_t::null: out += "null"; return;
    case ordered_json::value_t::boolean: out += v.get<bool>() ? "true" : "false"; return;
    case ordered_json::value_t::number_integer: out += std::to_string(v.get<int64_t>()); return;
    case ordered_json::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); return;
    case ordered_json::value_t::number_float: out += python_float(v.get<double>()); return;
    case ordered_json::value_t::string: out += json_string(v.get_ref<const std::string&>()); return;
    case ordered_json::value_t::array: {
      out += "[";
      bool first = true;
      for (const auto& x : v) {
        if (!first) out += ", ";
        first = false;
        dump_python(x, out);
      }
      out += "]";
      return;
    }
    case ordered_json::value_t::object: {
      out += "{";
      bool first = true;
      for (const auto& [key, x] : v.items()) {
        if (!first) out += ", ";
        first = false;
        out += json_string(key);
        out += ": ";
        dump_python(x, out);
      }
      out += "}";
      return;
    }
    default: throw Error("chat", "binary JSON values have no text form");
  }
}

}  // namespace

std::string python_json_dumps(const ordered_json& value) {
  std::string out;
  dump_python(value, out);
  return out;
}

// ---------------------------------------------------------------------------------------
// Reading and validating.

namespace {

constexpr const char* kWhere = "chat-encode";

enum class Role { System, User, Assistant, Tool, Developer, LatestReminder };

const std::map<std::string, Role>& role_names() {
  static const std::map<std::string, Role> names = {
      {"system", Role::System}, {"user", Role::User}, {"assistant", Role::Assistant},
      {"tool", Role::Tool}, {"developer", Role::Developer},
      {"latest_reminder", Role::LatestReminder}};
  return names;
}

// A user turn is a list of blocks after tool results are merged in.
struct Block {
  bool is_tool_result = false;
  std::string text;
  std::string tool_call_id;
};

struct ToolCallIn {
  std::string id;
  std::string name;
  ordered_json arguments;  // an object
};

struct Message {
  Role role = Role::User;
  std::string content;
  std::vector<Block> blocks;       // user turns only
  std::string reasoning;           // assistant turns only
  std::vector<ToolCallIn> tool_calls;
  std::vector<ordered_json> tools; // function schemas {name, description, parameters}
  ordered_json response_format;    // null when absent
  std::optional<std::string> task;
  bool wo_eos = false;
};

// Names the message and field in every error: "message 2 (assistant): 'tool_calls[0]...'".
class MessageReader {
 public:
  MessageReader(const ordered_json& m, size_t index) : m_(m), index_(index) {}

  [[noreturn]] void fail(const std::string& field, const std::string& msg) const {
    std::string who = str("message ", index_);
    if (!role_.empty()) who += " (" + role_ + ")";
    if (field.empty()) throw Error(kWhere, who + ": " + msg);
    throw Error(kWhere, str(who, ": '", field, "' ", msg));
  }
  bool has(const char* key) const { return m_.contains(key) && !m_[key].is_null(); }
  const ordered_json& at(const char* key) const { return m_[key]; }

  Role read_role() {
    if (!m_.is_object()) fail("", str("must be an object with 'role' and 'content', found ", m_.dump()));
    if (!has("role")) fail("role", "is missing");
    if (!m_["role"].is_string()) fail("role", str("must be a string, found ", m_["role"].dump()));
    role_ = m_["role"].get<std::string>();
    auto it = role_names().find(role_);
    if (it == role_names().end())
      fail("role", "is unknown: use system, user, assistant, tool, developer or latest_reminder");
    return it->second;
  }

  std::string string_field(const char* key, bool required) const {
    if (!has(key)) {
      if (required) fail(key, "is missing");
      return "";
    }
    if (!m_[key].is_string()) fail(key, str("must be a string, found ", m_[key].dump()));
    return m_[key].get<std::string>();
  }

  // Tool results may be a list of content parts; text parts are joined by blank lines.
  std::string tool_content() const {
    if (!has("content")) fail("content", "is missing");
    const ordered_json& c = m_["content"];
    if (c.is_string()) return c.get<std::string>();
    if (!c.is_array()) fail("content", str("must be a string or a list of parts, found ", c.dump()));
    std::string out;
    for (size_t i = 0; i < c.size(); ++i) {
      const ordered_json& part = c[i];
      std::string field = str("content[", i, "]");
      if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
        fail(field, str("must be an object with a 'type', found ", part.dump()));
      std::string type = part["type"].get<std::string>();
      std::string text = "[Unsupported " + type + "]";
      if (type == "text") {
        if (!part.contains("text") || !part["text"].is_string()) fail(field + ".text", "must be a string");
        text = part["text"].get<std::string>();
      }
      if (i > 0) out += "\n\n";
      out += text;
    }
    return out;
  }

  std::vector<ordered_json> tools() const {
    if (!has("tools")) return {};
    return read_tools(m_["tools"], "tools", [this](const std::string& f, const std::string& msg) { fail(f, msg); });
  }

  template <typename Fail>
  static std::vector<ordered_json> read_tools(const ordered_json& tools, const std::string& field, Fail fail) {
    if (!tools.is_array()) fail(field, str("must be a list of tools, found ", tools.dump()));
    std::vector<ordered_json> out;
    for (size_t i = 0; i < tools.size(); ++i) {
      const ordered_json& t = tools[i];
      std::string f = str(field, "[", i, "]");
      // OpenAI form {"type": "function", "function": {...}}, or the function object itself.
      const ordered_json& fn = t.is_object() && t.contains("function") ? t["function"] : t;
      if (!fn.is_object()) fail(f, str("must be a tool object with a 'function', found ", t.dump()));
      if (!fn.contains("name") || !fn["name"].is_string() || fn["name"].get<std::string>().empty())
        fail(f + ".function.name", "is missing: every tool needs a name");
      out.push_back(fn);
    }
    return out;
  }

  std::vector<ToolCallIn> tool_calls() const {
    if (!has("tool_calls")) return {};
    const ordered_json& calls = m_["tool_calls"];
    if (!calls.is_array()) fail("tool_calls", str("must be a list, found ", calls.dump()));
    std::vector<ToolCallIn> out;
    for (size_t i = 0; i < calls.size(); ++i) {
      const ordered_json& c = calls[i];
      std::string f = str("tool_calls[", i, "]");
      if (!c.is_object()) fail(f, str("must be an object, found ", c.dump()));
      if (!c.contains("function") || !c["function"].is_object())
        fail(f + ".function", "is missing: a tool call is {\"type\": \"function\", \"function\": {\"name\", \"arguments\"}}");
      const ordered_json& fn = c["function"];
      ToolCallIn call;
      if (!fn.contains("name") || fn["name"].is_null()) fail(f + ".function.name", "is missing: every tool call needs the tool's name");
      if (!fn["name"].is_string() || fn["name"].get<std::string>().empty())
        fail(f + ".function.name", str("must be a non-empty string, found ", fn["name"].dump()));
      call.name = fn["name"].get<std::string>();
      if (c.contains("id") && c["id"].is_string()) call.id = c["id"].get<std::string>();
      else if (fn.contains("id") && fn["id"].is_string()) call.id = fn["id"].get<std::string>();
      if (!fn.contains("arguments") || fn["arguments"].is_null())
        fail(f + ".function.arguments", "is missing: give the arguments as a JSON object (or its text)");
      const ordered_json& args = fn["arguments"];
      if (args.is_object()) {
        call.arguments = args;
      } else if (args.is_string()) {
        // Text that is not JSON travels as one string parameter named "arguments".
        const std::string& text = args.get_ref<const std::string&>();
        ordered_json parsed = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (parsed.is_discarded()) {
          call.arguments = ordered_json::object({{"arguments", text}});
        } else if (!parsed.is_object()) {
          fail(f + ".function.arguments", str("must be a JSON object, found ", text));
        } else {
          call.arguments = std::move(parsed);
        }
      } else {
        fail(f + ".function.arguments", str("must be a JSON object or its text, found ", args.dump()));
      }
      out.push_back(std::move(call));
    }
    return out;
  }

  std::optional<std::string> task() const {
    if (!has("task")) return std::nullopt;
    if (m_["task"].is_string()) {
      std::string t = m_["task"].get<std::string>();
      for (const char* k : chat_tokens::kTaskNames)
        if (t == k) return t;
    }
    fail("task", str("is unknown (", m_["task"].dump(), "): use action, query, authority, domain, title or read_url"));
  }

 private:
  const ordered_json& m_;
  size_t index_;
  std::string role_;
};

// Reads one message into the role's fields; a tool message keeps its result in content.
Message read_message(const ordered_json& m, size_t index) {
  MessageReader r(m, index);
  Message msg;
  msg.role = r.read_role();
  msg.task = r.task();
  if (r.has("wo_eos")) {
    if (!r.at("wo_eos").is_boolean()) r.fail("wo_eos", "must be true or false");
    msg.wo_eos = r.at("wo_eos").get<bool>();
  }
  switch (msg.role) {
    case Role::System:
    case Role::Developer:
      // A system message may carry only tools (or a response format).
      msg.content = r.string_field(
          "content", msg.role == Role::Developer || !(r.has("tools") || r.has("response_format")));
      if (msg.role == Role::Developer && msg.content.empty()) r.fail("content", "must not be empty");
      msg.tools = r.tools();
      if (r.has("response_format")) msg.response_format = r.at("response_format");
      break;
    case Role::User:
    case Role::LatestReminder:
      msg.content = r.string_field("content", true);
      break;
    case Role::Tool: {
      msg.content = r.tool_content();
      Block b;
      b.is_tool_result = true;
      b.text = msg.content;
      b.tool_call_id = r.string_field("tool_call_id", false);
      msg.blocks.push_back(std::move(b));
      break;
    }
    case Role::Assistant:
      if (!r.has("content") && !r.has("tool_calls"))
        r.fail("content", "is missing: an assistant message needs 'content' or 'tool_calls'");
      msg.content = r.string_field("content", false);
      msg.reasoning = r.string_field("reasoning_content", false);
      msg.tool_calls = r.tool_calls();
      break;
  }
  if (msg.role != Role::System && msg.role != Role::Developer && r.has("tools"))
    r.fail("tools", "are only shown to the model on a system or developer message: move them there");
  return msg;
}

// ---------------------------------------------------------------------------------------
// Normalizing.

// The format has no tool role: results become blocks of a user turn. Consecutive user
// turns merge too, unless the earlier one carries a task.
std::vector<Message> merge_into_user_turns(std::vector<Message> in) {
  std::vector<Message> out;
  for (Message& msg : in) {
    bool prev_open_user = !out.empty() && out.back().role == Role::User;
    if (msg.role == Role::Tool) {
      if (prev_open_user) {
        out.back().blocks.push_back(std::move(msg.blocks[0]));
      } else {
        Message user;
        user.role = Role::User;
        user.blocks.push_back(std::move(msg.blocks[0]));
        out.push_back(std::move(user));
      }
    } else if (msg.role == Role::User) {
      Block text;
      text.text = msg.content;
      if (prev_open_user && !out.back().task) {
        out.back().blocks.push_back(std::move(text));
      } else {
        msg.blocks.push_back(std::move(text));
        out.push_back(std::move(msg));
      }
    } else {
      out.push_back(std::move(msg));
    }
  }
  return out;
}

// Several results in one user turn are put in the order of the calls that asked for them
// (the latest assistant turn with tool calls); unknown ids sort first, ties keep order.
void order_tool_results_by_call(std::vector<Message>& msgs) {
  std::map<std::string, size_t> call_order;
  for (Message& msg : msgs) {
    if (msg.role == Role::Assistant && !msg.tool_calls.empty()) {
      call_order.clear();
      for (size_t i = 0; i < msg.tool_calls.size(); ++i)
        if (!msg.tool_calls[i].id.empty()) call_order[msg.tool_calls[i].id] = i;
    } else if (msg.role == Role::User && !call_order.empty()) {
      std::vector<Block> results;
      for (const Block& b : msg.blocks)
        if (b.is_tool_result) results.push_back(b);
      if (results.size() < 2) continue;
      auto rank = [&](const Block& b) {
        auto it = call_order.find(b.tool_call_id);
        return it == call_order.end() ? size_t{0} : it->second;
      };
      std::stable_sort(results.begin(), results.end(),
                       [&](const Block& a, const Block& b) { return rank(a) < rank(b); });
      size_t next = 0;
      for (Block& b : msg.blocks)
        if (b.is_tool_result) b = results[next++];
    }
  }
}

int last_user_index(const std::vector<Message>& msgs) {
  for (int i = static_cast<int>(msgs.size()) - 1; i >= 0; --i)
    if (msgs[i].role == Role::User || msgs[i].role == Role::Developer) return i;
  return -1;
}

// Before the last user turn: assistant turns lose their reasoning, developer turns go.
std::vector<Message> drop_earlier_thinking(std::vector<Message> msgs) {
  int last_user = last_user_index(msgs);
  std::vector<Message> out;
  for (int i = 0; i < static_cast<int>(msgs.size()); ++i) {
    Message& msg = msgs[i];
    if (i < last_user && msg.role == Role::Developer) continue;
    if (i < last_user && msg.role == Role::Assistant) msg.reasoning.clear();
    out.push_back(std::move(msg));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Rendering.

std::string render_tools(const std::vector<ordered_json>& tools) {
  std::string schemas;
  for (size_t i = 0; i < tools.size(); ++i) {
    if (i > 0) schemas += "\n";
    schemas += python_json_dumps(tools[i]);
  }
  return chat_tokens::kToolsPreamble + schemas + chat_tokens::kToolsPostscript;
}

std::string render_tool_calls(const std::vector<ToolCallIn>& calls) {
  using namespace chat_tokens;
  std::string out = std::string("<") + kDsml + kToolCallsBlock + ">\n";
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i > 0) out += "\n";
    out += std::string("<") + kDsml + "invoke name=\"" + calls[i].name + "\">\n";
    bool first = true;
    for (const auto& [key, value] : calls[i].arguments.items()) {
      if (!first) out += "\n";
      first = false;
      bool is_string = value.is_string();
      out += std::string("<") + kDsml + "parameter name=\"" + key + "\" string=\"" +
             (is_string ? "true" : "false") + "\">";
      out += is_string ? value.get<std::string>() : python_json_dumps(value);
      out += std::string("</") + kDsml + "parameter>";
    }
    out += std::string("\n</") + kDsml + "invoke>";
  }
  out += std::string("\n</") + kDsml + kToolCallsBlock + ">";
  return out;
}

std::string render_extras(const Message& msg) {
  std::string out;
  if (!msg.tools.empty()) out += "\n\n" + render_tools(msg.tools);
  if (!msg.response_format.is_null())
    out += std::string("\n\n") + chat_tokens::kResponseFormatPreamble + python_json_dumps(msg.response_format);
  return out;
}

struct RenderState {
  const std::vector<Message>& msgs;
  bool thinking;
  bool drop_thinking;
  ReasoningEffort effort;
  int last_user;
};

std::string render_message(const RenderState& s, int index) {
  using namespace chat_tokens;
  const Message& msg = s.msgs[index];
  std::string out;
  if (index == 0 && s.thinking && s.effort == ReasoningEffort::Max) out += kReasoningEffortMax;

  switch (msg.role) {
    case Role::System:
      out += msg.content + render_extras(msg);
      break;
    case Role::Developer:
      out += kUser + msg.content + render_extras(msg);
      break;
    case Role::User:
      out += kUser;
      for (size_t i = 0; i < msg.blocks.size(); ++i) {
        if (i > 0) out += "\n\n";
        const Block& b = msg.blocks[i];
        out += b.is_tool_result ? std::string(kToolResultOpen) + b.text + kToolResultClose : b.text;
      }
      break;
    case Role::LatestReminder:
      out += kLatestReminder + msg.content;
      break;
    case Role::Assistant: {
      // A turn that answers a task is a bare label; a turn before the last user message
      // lost its reasoning (the prompt closed its think block with </think> already).
      bool answers_task = index > 0 && s.msgs[index - 1].task.has_value();
      if (s.thinking && !answers_task && (!s.drop_thinking || index > s.last_user))
        out += msg.reasoning + kThinkEnd;
      out += msg.content;
      if (!msg.tool_calls.empty()) out += "\n\n" + render_tool_calls(msg.tool_calls);
      if (!msg.wo_eos) out += kEos;
      break;
    }
    case Role::Tool:
      throw Error(kWhere, "internal: tool message left after merging");
  }

  // The transition into what follows: only before an assistant or reminder turn, or at the end.
  if (index + 1 < static_cast<int>(s.msgs.size())) {
    Role next = s.msgs[index + 1].role;
    if (next != Role::Assistant && next != Role::LatestReminder) return out;
  }
  if (msg.task) {
    std::string token = task_token(*msg.task);
    if (*msg.task == "action")
      out += std::string(kAssistant) + (s.thinking ? kThinkStart : kThinkEnd) + token;
    else
      out += token;
  } else if (msg.role == Role::User || msg.role == Role::Developer) {
    bool open_think = s.thinking && (!s.drop_thinking || index >= s.last_user);
    out += std::string(kAssistant) + (open_think ? kThinkStart : kThinkEnd);
  }
  return out;
}

}  // namespace

std::string encode_chat(const ordered_json& conversation, ChatMode mode, const ChatEncodeOptions& options) {
  const ordered_json* messages = &conversation;
  std::vector<ordered_json> request_tools;
  if (conversation.is_object()) {
    if (!conversation.contains("messages"))
      throw Error(kWhere, "a conversation object needs 'messages' (and may have 'tools')");
    messages = &conversation["messages"];
    if (conversation.contains("tools") && !conversation["tools"].is_null())
      request_tools = MessageReader::read_tools(conversation["tools"], "tools", [](const std::string& f, const std::string& msg) {
        throw Error(kWhere, str("'", f, "' ", msg));
      });
  }
  if (!messages->is_array())
    throw Error(kWhere, str("the conversation must be a list of messages or {\"tools\", \"messages\"}, found ",
                            messages->type_name()));
  if (messages->empty()) throw Error(kWhere, "the conversation has no messages");

  std::vector<Message> msgs;
  for (size_t i = 0; i < messages->size(); ++i) msgs.push_back(read_message((*messages)[i], i));

  // Request-level tools live on the leading system/developer message, as the prompt shows
  // them after its content; without one they get an empty system message of their own.
  if (!request_tools.empty()) {
    if (msgs[0].role == Role::System || msgs[0].role == Role::Developer) {
      msgs[0].tools = request_tools;
    } else {
      Message system;
      system.role = Role::System;
      system.tools = request_tools;
      msgs.insert(msgs.begin(), std::move(system));
    }
  }

  msgs = merge_into_user_turns(std::move(msgs));
  order_tool_results_by_call(msgs);

  bool thinking = mode == ChatMode::Thinking;
  bool any_tools = std::any_of(msgs.begin(), msgs.end(), [](const Message& m) { return !m.tools.empty(); });
  bool drop_thinking = options.drop_thinking && !any_tools;
  if (thinking && drop_thinking) msgs = drop_earlier_thinking(std::move(msgs));

  RenderState state{msgs, thinking, drop_thinking, options.reasoning_effort, last_user_index(msgs)};
  std::string prompt = options.add_bos ? chat_tokens::kBos : "";
  for (int i = 0; i < static_cast<int>(msgs.size()); ++i) prompt += render_message(state, i);
  return prompt;
}

std::string encode_chat_text(std::string_view json_text, ChatMode mode, const ChatEncodeOptions& options) {
  ordered_json conversation;
  try {
    conversation = ordered_json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(kWhere, str("the conversation is not valid JSON: ", e.what()));
  }
  return encode_chat(conversation, mode, options);
}

}  // namespace dsv4
