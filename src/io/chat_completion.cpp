// A generated completion -> reasoning, content and tool calls. The completion reads
//   [reasoning</think>]content[\n\n<｜DSML｜tool_calls>\n<invoke>\n...\n</｜DSML｜tool_calls>]<EOS>
// where each invoke is
//   <｜DSML｜invoke name="NAME">\n(<｜DSML｜parameter name="K" string="true|false">V</｜DSML｜parameter>\n)*</｜DSML｜invoke>
// A text without the end-of-sentence token is a truncated generation: it parses as far as
// it goes. With the token, everything must be well formed.
#include <algorithm>
#include <cstring>
#include <string_view>

#include "core/error.h"
#include "io/chat_encoding.h"
#include "io/chat_tokens.h"

namespace dsv4 {

namespace {

using nlohmann::ordered_json;
using namespace chat_tokens;

constexpr const char* kWhere = "chat-parse";

// The text ended inside the tool-calls block (only possible without the end token).
struct Truncated {};

// About 40 bytes of text from pos, quoted, for error messages (cut between characters).
std::string excerpt(const std::string& text, size_t pos, size_t end) {
  if (pos >= end) return "the end of the text";
  size_t cut = std::min<size_t>(pos + 40, end);
  while (cut > pos && cut < end && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return "'" + text.substr(pos, cut - pos) + (cut < end ? "...'" : "'");
}

// The longest suffix of text[begin, end) that is a proper prefix of marker: the start of
// a special token cut off by the truncation.
size_t partial_marker(const std::string& text, size_t begin, size_t end, std::string_view marker) {
  size_t longest = std::min(end - begin, marker.size() - 1);
  for (size_t n = longest; n > 0; --n)
    if (std::string_view(text).substr(end - n, n) == marker.substr(0, n)) return n;
  return 0;
}

void check_no_special_tokens(const std::string& s, const char* what) {
  for (const char* token : {kBos, kEos, kThinkStart, kThinkEnd, kDsml})
    if (s.find(token) != std::string::npos)
      throw Error(kWhere, str("the ", what, " contains the special token '", token,
                              "': the completion does not follow the format"));
}

// Reads the DSML tool-calls block from just after "<｜DSML｜tool_calls" up to end
// (the end-of-sentence token when there is one, else the end of the text).
class DsmlReader {
 public:
  DsmlReader(const std::string& text, size_t pos, size_t end, bool bounded)
      : text_(text), pos_(pos), end_(end), bounded_(bounded) {}

  size_t pos() const { return pos_; }

  // Appends every complete invoke; true when the block's closing tag was read.
  bool read(std::vector<ChatToolCall>& calls) {
    try {
      expect(">\n");
      const std::string close_block = std::string("</") + kDsml + kToolCallsBlock + ">";
      while (!consume(close_block)) {
        calls.push_back(read_invoke(calls.size()));
        expect("\n");
      }
      return true;
    } catch (const Truncated&) {
      return false;
    }
  }

 private:
  ChatToolCall read_invoke(size_t index) {
    ChatToolCall call;
    expect(std::string("<") + kDsml + "invoke name=\"");
    // The name runs to '">' + newline, within this tag (names may hold quotes).
    call.name = read_until("\">\n", "the tool name", /*within_tag=*/true);
    if (call.name.empty()) fail(str("tool call ", index, " has an empty name"));
    call.arguments = ordered_json::object();
    consume("\n");  // an invoke without parameters has an empty line
    const std::string close_invoke = std::string("</") + kDsml + "invoke>";
    while (!consume(close_invoke)) {
      expect(std::string("<") + kDsml + "parameter name=\"");
      std::string chunk = read_until(std::string("</") + kDsml + "parameter>", "the parameter", false);
      expect("\n");
      if (chunk.find(kDsml) != std::string::npos)
        fail(str("a parameter of '", call.name, "' runs into another DSML tag (is its closing tag broken?): ",
                 excerpt(chunk, 0, chunk.size())));
      // chunk: K" string="true|false">V; the first such marker ends the name.
      constexpr std::string_view kTrue = "\" string=\"true\">", kFalse = "\" string=\"false\">";
      size_t t = chunk.find(kTrue);
      size_t f = chunk.find(kFalse);
      if (t == std::string::npos && f == std::string::npos)
        fail(str("a parameter of '", call.name, "' needs string=\"true\" or string=\"false\": ",
                 excerpt(chunk, 0, chunk.size())));
      bool is_string = t < f;
      size_t name_end = is_string ? t : f;
      std::string key = chunk.substr(0, name_end);
      std::string value = chunk.substr(name_end + (is_string ? kTrue : kFalse).size());
      if (key.empty()) fail(str("tool call ", index, " ('", call.name, "') has a parameter with an empty name"));
      if (call.arguments.contains(key)) fail(str("tool call '", call.name, "' repeats the parameter '", key, "'"));
      if (is_string) {
        call.arguments[key] = value;
      } else {
        ordered_json parsed = ordered_json::parse(value, nullptr, /*allow_exceptions=*/false);
        if (parsed.is_discarded())
          fail(str("parameter '", key, "' of '", call.name, "' is marked string=\"false\" but its value is not JSON: ",
                   excerpt(value, 0, value.size())));
        call.arguments[key] = std::move(parsed);
      }
    }
    return call;
  }

  [[noreturn]] void fail(const std::string& msg) const {
    throw Error(kWhere, "malformed DSML tool calls: " + msg);
  }

  // True (and consumed) when lit comes next. When the text stops inside lit, the
  // generation was cut there: Truncated.
  bool consume(std::string_view lit) {
    std::string_view rest = std::string_view(text_).substr(pos_, end_ - pos_);
    if (rest.substr(0, lit.size()) == lit) {
      pos_ += lit.size();
      return true;
    }
    if (!bounded_ && rest.size() < lit.size() && lit.substr(0, rest.size()) == rest) throw Truncated{};
    return false;
  }

  void expect(std::string_view lit) {
    if (!consume(lit))
      fail(str("expected '", lit, "' at byte ", pos_, ", found ", excerpt(text_, pos_, end_)));
  }

  // The text up to delim (consumed). within_tag: delim must come before the next DSML tag.
  std::string read_until(std::string_view delim, const char* what, bool within_tag) {
    std::string_view body = std::string_view(text_).substr(0, end_);
    size_t at = body.find(delim, pos_);
    size_t next_tag = within_tag ? body.find(kDsml, pos_) : std::string::npos;
    if (at == std::string::npos || at > next_tag) {
      if (!bounded_ && next_tag == std::string::npos) throw Truncated{};
      fail(str(what, " starting at byte ", pos_, " is not closed by '", delim, "'"));
    }
    std::string out = text_.substr(pos_, at - pos_);
    pos_ = at + delim.size();
    return out;
  }

  const std::string& text_;
  size_t pos_;
  size_t end_;
  bool bounded_;
};

}  // namespace

ParsedCompletion parse_completion(const std::string& text, ChatMode mode) {
  ParsedCompletion out;
  const std::string_view eos = kEos;
  size_t eos_at = text.find(eos);
  if (eos_at != std::string::npos && eos_at + eos.size() != text.size())
    throw Error(kWhere, str("text continues after the end-of-sentence token: ",
                            excerpt(text, eos_at + eos.size(), text.size())));
  const bool bounded = eos_at != std::string::npos;
  const size_t end = bounded ? eos_at : text.size();
  auto find_before_end = [&](std::string_view s, size_t from) {
    size_t at = text.find(s, from);
    return at < end ? at : std::string::npos;
  };

  // Skip what the prompt already ended with, if the caller kept it.
  size_t pos = 0;
  const bool thinking = mode == ChatMode::Thinking;
  const char* prompt_tail = thinking ? kThinkStart : kThinkEnd;
  if (text.compare(0, std::strlen(prompt_tail), prompt_tail) == 0) pos = std::strlen(prompt_tail);
  bool task_answer = false;  // a task's answer is a bare label, without reasoning
  for (const char* name : kTaskNames) {
    std::string token = task_token(name);
    if (text.compare(pos, token.size(), token) == 0) {
      pos += token.size();
      task_answer = true;
      break;
    }
  }

  const std::string tool_calls_open = std::string("<") + kDsml + kToolCallsBlock;
  if (thinking && !task_answer) {
    size_t close = find_before_end(kThinkEnd, pos);
    size_t calls = find_before_end(tool_calls_open, pos);
    if (calls != std::string::npos && (close == std::string::npos || calls < close))
      throw Error(kWhere, "tool calls start inside the reasoning: the reasoning must end with </think> first");
    if (close == std::string::npos) {
      if (bounded) throw Error(kWhere, "the reasoning is not closed by </think> before the end-of-sentence token");
      out.reasoning = text.substr(pos, end - pos - partial_marker(text, pos, end, kThinkEnd));
      check_no_special_tokens(out.reasoning, "reasoning");
      return out;
    }
    out.reasoning = text.substr(pos, close - pos);
    check_no_special_tokens(out.reasoning, "reasoning");
    pos = close + std::strlen(kThinkEnd);
  }

  size_t calls = find_before_end(tool_calls_open, pos);
  if (calls == std::string::npos) {
    size_t cut = end;
    if (!bounded)
      cut -= std::max(partial_marker(text, pos, end, eos), partial_marker(text, pos, end, tool_calls_open));
    out.content = text.substr(pos, cut - pos);
    check_no_special_tokens(out.content, "content");
    out.finished = bounded;
    return out;
  }
  out.content = text.substr(pos, calls - pos);
  // The blank line before the block belongs to the format, not to the content.
  if (out.content.size() >= 2 && out.content.compare(out.content.size() - 2, 2, "\n\n") == 0)
    out.content.resize(out.content.size() - 2);
  check_no_special_tokens(out.content, "content");

  DsmlReader reader(text, calls + tool_calls_open.size(), end, bounded);
  if (!reader.read(out.tool_calls)) return out;  // cut inside the block
  size_t after = reader.pos();
  if (bounded) {
    if (after != end)
      throw Error(kWhere, str("unexpected text after the tool calls: ", excerpt(text, after, end)));
    out.finished = true;
  } else {
    std::string_view rest = std::string_view(text).substr(after);
    if (!rest.empty() && eos.substr(0, rest.size()) != rest)
      throw Error(kWhere, str("unexpected text after the tool calls: ", excerpt(text, after, text.size())));
  }
  return out;
}

}  // namespace dsv4
