// DeepSeek-V4 chat format: byte-exact prompts on the official cases, completions parsed
// back (fixture turns, round trips, truncated generations), and clear errors for broken
// conversations and malformed DSML.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/chat_encoding.h"

using namespace dsv4;
using nlohmann::ordered_json;

namespace {

const std::string kAssistant = "<｜Assistant｜>";
const std::string kEos = "<｜end▁of▁sentence｜>";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string case_path(int n, const char* kind, const char* ext) {
  return std::string(DSV4_FIXTURES) + "/chat-encoding/test_" + kind + "_" + std::to_string(n) + ext;
}

// The thinking mode of each case, from the fixtures' README table.
ChatMode case_mode(int n) { return n == 4 ? ChatMode::Chat : ChatMode::Thinking; }

const ordered_json& case_messages(const ordered_json& input) {
  return input.is_object() ? input["messages"] : input;
}

// Each assistant turn of a prompt: the text after "<｜Assistant｜>" up to its end token.
std::vector<std::string> assistant_turns(const std::string& prompt) {
  std::vector<std::string> turns;
  size_t at = prompt.find(kAssistant);
  while (at != std::string::npos) {
    size_t begin = at + kAssistant.size();
    size_t eos = prompt.find(kEos, begin);
    size_t end = eos == std::string::npos ? prompt.size() : eos + kEos.size();
    turns.push_back(prompt.substr(begin, end - begin));
    at = prompt.find(kAssistant, begin);
  }
  return turns;
}

ordered_json arguments_of(const ordered_json& call) {
  const ordered_json& args = call["function"]["arguments"];
  return args.is_string() ? ordered_json::parse(args.get<std::string>()) : args;
}

// Encodes, returns the message that the error carried ("" when no error).
std::string encode_error(const std::string& json_text, ChatMode mode = ChatMode::Thinking) {
  try {
    encode_chat_text(json_text, mode);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string parse_error(const std::string& text, ChatMode mode = ChatMode::Thinking) {
  try {
    parse_completion(text, mode);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const char* kWeatherTool = R"({"type": "function", "function": {"name": "get_weather",
  "description": "Weather", "parameters": {"type": "object",
  "properties": {"location": {"type": "string"}}, "required": ["location"]}}})";

}  // namespace

// ---------------------------------------------------------------------------------------
// The official cases.

TEST(ChatEncoding, FixtureCasesAreByteExact) {
  for (int n = 1; n <= 4; ++n) {
    std::string input = read_text(case_path(n, "input", ".json"));
    std::string expected = read_text(case_path(n, "output", ".txt"));
    EXPECT_EQ(encode_chat_text(input, case_mode(n)), expected) << "case " << n;
  }
}

TEST(ChatEncoding, FixtureAssistantTurnsParseBackToTheirMessages) {
  for (int n = 1; n <= 4; ++n) {
    ordered_json input = ordered_json::parse(read_text(case_path(n, "input", ".json")));
    std::string prompt = read_text(case_path(n, "output", ".txt"));
    std::vector<ordered_json> assistants;
    for (const auto& m : case_messages(input))
      if (m["role"] == "assistant") assistants.push_back(m);
    std::vector<std::string> turns = assistant_turns(prompt);
    ASSERT_EQ(turns.size(), assistants.size()) << "case " << n;

    for (size_t t = 0; t < turns.size(); ++t) {
      SCOPED_TRACE("case " + std::to_string(n) + " turn " + std::to_string(t));
      const ordered_json& m = assistants[t];
      ParsedCompletion parsed = parse_completion(turns[t], case_mode(n));
      EXPECT_TRUE(parsed.finished);
      EXPECT_EQ(parsed.content, m.value("content", ""));
      std::string reasoning = m.value("reasoning_content", "");
      bool last = t + 1 == turns.size();
      if (last && case_mode(n) == ChatMode::Thinking)
        EXPECT_EQ(parsed.reasoning, reasoning);  // the current turn keeps its reasoning
      else
        EXPECT_TRUE(parsed.reasoning.empty() || parsed.reasoning == reasoning);
      ordered_json calls = m.value("tool_calls", ordered_json::array());
      ASSERT_EQ(parsed.tool_calls.size(), calls.size());
      for (size_t c = 0; c < calls.size(); ++c) {
        EXPECT_EQ(parsed.tool_calls[c].name, calls[c]["function"]["name"].get<std::string>());
        EXPECT_EQ(parsed.tool_calls[c].arguments, arguments_of(calls[c]));
      }
    }
  }
}

TEST(ChatEncoding, FixtureCase1FirstTurnCallsGetWeather) {
  std::string prompt = read_text(case_path(1, "output", ".txt"));
  ParsedCompletion parsed = parse_completion(assistant_turns(prompt).at(0), ChatMode::Thinking);
  ASSERT_EQ(parsed.tool_calls.size(), 1u);
  EXPECT_EQ(parsed.tool_calls[0].name, "get_weather");
  EXPECT_EQ(parsed.tool_calls[0].arguments, ordered_json::parse(R"({"location": "Beijing", "unit": "celsius"})"));
  EXPECT_FALSE(parsed.reasoning.empty());
}

// ---------------------------------------------------------------------------------------
// Encoding rules beyond the cases.

TEST(ChatEncoding, GenerationPromptFollowsAFinalUserTurn) {
  const char* conv = R"([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}])";
  EXPECT_EQ(encode_chat_text(conv, ChatMode::Thinking),
            "<｜begin▁of▁sentence｜>S<｜User｜>Hi<｜Assistant｜><think>");
  EXPECT_EQ(encode_chat_text(conv, ChatMode::Chat), "<｜begin▁of▁sentence｜>S<｜User｜>Hi<｜Assistant｜></think>");
  ChatEncodeOptions no_bos;
  no_bos.add_bos = false;
  EXPECT_EQ(encode_chat_text(conv, ChatMode::Chat, no_bos), "S<｜User｜>Hi<｜Assistant｜></think>");
}

TEST(ChatEncoding, EarlierReasoningIsDroppedUnlessKeptOrToolsArePresent) {
  const char* conv = R"([{"role": "user", "content": "a"},
    {"role": "assistant", "reasoning_content": "R1", "content": "A1"},
    {"role": "user", "content": "b"}])";
  std::string dropped = encode_chat_text(conv, ChatMode::Thinking);
  EXPECT_EQ(dropped, "<｜begin▁of▁sentence｜><｜User｜>a<｜Assistant｜></think>A1<｜end▁of▁sentence｜>"
                     "<｜User｜>b<｜Assistant｜><think>");
  ChatEncodeOptions keep;
  keep.drop_thinking = false;
  EXPECT_EQ(encode_chat_text(conv, ChatMode::Thinking, keep),
            "<｜begin▁of▁sentence｜><｜User｜>a<｜Assistant｜><think>R1</think>A1<｜end▁of▁sentence｜>"
            "<｜User｜>b<｜Assistant｜><think>");
  // Tools anywhere keep every turn's reasoning.
  ordered_json with_tools = ordered_json::parse(conv);
  with_tools.insert(with_tools.begin(), ordered_json{{"role", "system"}, {"content", "S"},
                                                     {"tools", ordered_json::array({ordered_json::parse(kWeatherTool)})}});
  EXPECT_NE(encode_chat(with_tools, ChatMode::Thinking).find("<think>R1</think>A1"), std::string::npos);
}

TEST(ChatEncoding, RequestToolsGoOnTheLeadingSystemMessageOrANewOne) {
  ordered_json tools = ordered_json::array({ordered_json::parse(kWeatherTool)});
  ordered_json with_system = {{"tools", tools},
                              {"messages", ordered_json::parse(R"([{"role": "system", "content": "S"},
                                                                   {"role": "user", "content": "q"}])")}};
  std::string p = encode_chat(with_system, ChatMode::Chat);
  EXPECT_EQ(p.rfind("<｜begin▁of▁sentence｜>S\n\n## Tools\n\n", 0), 0u);
  EXPECT_NE(p.find(R"({"name": "get_weather", "description": "Weather", "parameters": {"type": "object")"),
            std::string::npos);  // key order and Python separators kept

  ordered_json without_system = {{"tools", tools},
                                 {"messages", ordered_json::parse(R"([{"role": "user", "content": "q"}])")}};
  std::string q = encode_chat(without_system, ChatMode::Chat);
  EXPECT_EQ(q.rfind("<｜begin▁of▁sentence｜>\n\n## Tools\n\n", 0), 0u);
  EXPECT_NE(q.find("invoke tool calls.\n<｜User｜>q<｜Assistant｜></think>"), std::string::npos);
  // The same conversation written with a content-less system message.
  ordered_json explicit_system = ordered_json::array(
      {{{"role", "system"}, {"tools", tools}}, {{"role", "user"}, {"content", "q"}}});
  EXPECT_EQ(encode_chat(explicit_system, ChatMode::Chat), q);
}

TEST(ChatEncoding, ToolResultsMergeIntoOneUserTurnInCallOrder) {
  const char* conv = R"([{"role": "system", "content": "S", "tools": [)" "%TOOL%" R"(]},
    {"role": "user", "content": "q"},
    {"role": "assistant", "content": "", "tool_calls": [
      {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\": \"A\"}"}},
      {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\": \"B\"}"}}]},
    {"role": "tool", "tool_call_id": "c2", "content": "rB"},
    {"role": "tool", "tool_call_id": "c1", "content": "rA"},
    {"role": "user", "content": "more"}])";
  std::string text = conv;
  text.replace(text.find("%TOOL%"), 6, kWeatherTool);
  std::string p = encode_chat_text(text, ChatMode::Thinking);
  EXPECT_NE(p.find("<｜end▁of▁sentence｜><｜User｜><tool_result>rA</tool_result>\n\n<tool_result>rB</tool_result>"
                   "\n\nmore<｜Assistant｜><think>"),
            std::string::npos)
      << p;
}

TEST(ChatEncoding, TasksReminderEffortAndOpenAssistantTurn) {
  EXPECT_EQ(encode_chat_text(R"([{"role": "user", "content": "q", "task": "query"}])", ChatMode::Chat),
            "<｜begin▁of▁sentence｜><｜User｜>q<｜query｜>");
  EXPECT_EQ(encode_chat_text(R"([{"role": "user", "content": "q", "task": "action"}])", ChatMode::Thinking),
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜><think><｜action｜>");
  EXPECT_EQ(encode_chat_text(R"([{"role": "user", "content": "q"},
      {"role": "assistant", "content": "A", "task": "title"}])", ChatMode::Chat),
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜></think>A<｜end▁of▁sentence｜><｜title｜>");
  EXPECT_EQ(encode_chat_text(R"([{"role": "system", "content": "S"}, {"role": "latest_reminder", "content": "R"},
      {"role": "user", "content": "q"}])", ChatMode::Chat),
            "<｜begin▁of▁sentence｜>S<｜latest_reminder｜>R<｜User｜>q<｜Assistant｜></think>");
  // An assistant turn without its end token: a prefix for the model to continue.
  EXPECT_EQ(encode_chat_text(R"([{"role": "user", "content": "q"},
      {"role": "assistant", "reasoning_content": "r", "content": "Part", "wo_eos": true}])", ChatMode::Thinking),
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜><think>r</think>Part");
  ChatEncodeOptions max;
  max.reasoning_effort = ReasoningEffort::Max;
  std::string p = encode_chat_text(R"([{"role": "user", "content": "q"}])", ChatMode::Thinking, max);
  EXPECT_EQ(p.rfind("<｜begin▁of▁sentence｜>Reasoning Effort: Absolute maximum", 0), 0u);
  EXPECT_EQ(encode_chat_text(R"([{"role": "user", "content": "q"}])", ChatMode::Chat, max),
            "<｜begin▁of▁sentence｜><｜User｜>q<｜Assistant｜></think>");
}

TEST(ChatEncoding, ArgumentsThatAreNotJsonTravelAsOneStringParameter) {
  std::string p = encode_chat_text(R"([{"role": "user", "content": "q"},
      {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
        "function": {"name": "f", "arguments": "not json"}}]}])", ChatMode::Chat);
  EXPECT_NE(p.find(R"(<｜DSML｜parameter name="arguments" string="true">not json</｜DSML｜parameter>)"),
            std::string::npos);
}

TEST(ChatEncoding, PythonJsonSpelling) {
  EXPECT_EQ(python_json_dumps(ordered_json::parse(R"({"b": [1, -2, true, null], "a": {"x": "é\n\"q\""}})")),
            "{\"b\": [1, -2, true, null], \"a\": {\"x\": \"é\\n\\\"q\\\"\"}}");
  EXPECT_EQ(python_json_dumps(1.5), "1.5");
  EXPECT_EQ(python_json_dumps(2.0), "2.0");
  EXPECT_EQ(python_json_dumps(-0.0), "-0.0");
  EXPECT_EQ(python_json_dumps(0.0001), "0.0001");
  EXPECT_EQ(python_json_dumps(0.00001), "1e-05");
  EXPECT_EQ(python_json_dumps(1e15), "1000000000000000.0");
  EXPECT_EQ(python_json_dumps(1e16), "1e+16");
  EXPECT_EQ(python_json_dumps(1.25e100), "1.25e+100");
  EXPECT_EQ(python_json_dumps(0.1), "0.1");
  EXPECT_EQ(python_json_dumps(123456.789), "123456.789");
}

// ---------------------------------------------------------------------------------------
// Round trips: a conversation's tool calls come back from its prompt.

TEST(ChatEncoding, ToolCallsRoundTrip) {
  ordered_json args = ordered_json::parse(R"({"text": "line1\nline2 \"quoted\" <b>é</b>", "count": 5,
      "ratio": 0.25, "flag": false, "nothing": null, "list": [1, "two", {"three": 3.5}],
      "nested": {"z": 1, "a": [true]}, "empty": "", "say \"hi\"": "q\"uote"})");
  for (ChatMode mode : {ChatMode::Thinking, ChatMode::Chat}) {
    ordered_json conv = ordered_json::parse(R"([{"role": "system", "content": "S"},
        {"role": "user", "content": "go"}])");
    conv[0]["tools"] = ordered_json::array({ordered_json::parse(kWeatherTool)});
    ordered_json assistant = {{"role", "assistant"}, {"reasoning_content", "think first"}, {"content", "Calling."}};
    assistant["tool_calls"] = ordered_json::array(
        {{{"type", "function"}, {"function", {{"name", "get_weather"}, {"arguments", args.dump()}}}},
         {{"type", "function"}, {"function", {{"name", "noop"}, {"arguments", "{}"}}}}});
    conv.push_back(assistant);

    std::vector<std::string> turns = assistant_turns(encode_chat(conv, mode));
    ASSERT_EQ(turns.size(), 1u);
    ParsedCompletion parsed = parse_completion(turns[0], mode);
    EXPECT_TRUE(parsed.finished);
    EXPECT_EQ(parsed.reasoning, mode == ChatMode::Thinking ? "think first" : "");
    EXPECT_EQ(parsed.content, "Calling.");
    ASSERT_EQ(parsed.tool_calls.size(), 2u);
    EXPECT_EQ(parsed.tool_calls[0].name, "get_weather");
    EXPECT_EQ(parsed.tool_calls[0].arguments, args);  // ordered: same keys, same order
    EXPECT_EQ(parsed.tool_calls[1].name, "noop");
    EXPECT_EQ(parsed.tool_calls[1].arguments, ordered_json::object());
  }
}

TEST(ChatEncoding, PlainAnswersRoundTrip) {
  ParsedCompletion p = parse_completion("Simple.</think>4<｜end▁of▁sentence｜>", ChatMode::Thinking);
  EXPECT_EQ(p.reasoning, "Simple.");
  EXPECT_EQ(p.content, "4");
  EXPECT_TRUE(p.finished);
  ParsedCompletion c = parse_completion("Hello\n\nworld<｜end▁of▁sentence｜>", ChatMode::Chat);
  EXPECT_EQ(c.content, "Hello\n\nworld");
  EXPECT_TRUE(c.reasoning.empty());
}

// ---------------------------------------------------------------------------------------
// Truncated generations.

TEST(ChatParse, TruncatedCompletionsParseAsFarAsTheyGo) {
  ParsedCompletion p = parse_completion("still thinking</thi", ChatMode::Thinking);
  EXPECT_EQ(p.reasoning, "still thinking");
  EXPECT_FALSE(p.finished);

  p = parse_completion("r</think>half an answ", ChatMode::Thinking);
  EXPECT_EQ(p.reasoning, "r");
  EXPECT_EQ(p.content, "half an answ");
  EXPECT_FALSE(p.finished);

  p = parse_completion("done<｜end▁of", ChatMode::Chat);
  EXPECT_EQ(p.content, "done");
  EXPECT_FALSE(p.finished);

  const std::string one_call =
      "r</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n"
      "<｜DSML｜parameter name=\"a\" string=\"false\">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n";
  p = parse_completion(one_call + "<｜DSML｜invoke name=\"g\">\n<｜DSML｜parameter name=\"b\" string=\"tr",
                       ChatMode::Thinking);
  ASSERT_EQ(p.tool_calls.size(), 1u);  // the unfinished call is left out
  EXPECT_EQ(p.tool_calls[0].name, "f");
  EXPECT_EQ(p.tool_calls[0].arguments, ordered_json({{"a", 1}}));
  EXPECT_FALSE(p.finished);

  p = parse_completion(one_call + "</｜DSML｜tool_calls>", ChatMode::Thinking);
  EXPECT_EQ(p.tool_calls.size(), 1u);
  EXPECT_FALSE(p.finished);
  p = parse_completion(one_call + "</｜DSML｜tool_calls><｜end▁of▁sentence｜>", ChatMode::Thinking);
  EXPECT_TRUE(p.finished);
}

// ---------------------------------------------------------------------------------------
// Errors.

TEST(ChatParse, MalformedCompletionsAreErrors) {
  const std::string head = "r</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n";
  const std::string tail = "</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>";
  EXPECT_NE(parse_error(head + "<｜DSML｜parameter name=\"a\" string=\"maybe\">1</｜DSML｜parameter>\n" + tail)
                .find("string=\"true\" or string=\"false\""),
            std::string::npos);
  EXPECT_NE(parse_error(head + "<｜DSML｜parameter name=\"a\" string=\"false\">{oops</｜DSML｜parameter>\n" + tail)
                .find("not JSON"),
            std::string::npos);
  EXPECT_NE(parse_error(head + "<｜DSML｜parameter name=\"a\" string=\"true\">1</｜DSML｜parameter>\n"
                               "<｜DSML｜parameter name=\"a\" string=\"true\">2</｜DSML｜parameter>\n" + tail)
                .find("repeats the parameter 'a'"),
            std::string::npos);
  EXPECT_NE(parse_error(head + "<｜DSML｜param name=\"a\">1\n" + tail).find("malformed DSML"), std::string::npos);
  EXPECT_NE(parse_error(head + "<｜DSML｜parameter name=\"a\" string=\"true\">1" + "<｜end▁of▁sentence｜>")
                .find("not closed"),
            std::string::npos);
  EXPECT_NE(parse_error("r</think>x<｜end▁of▁sentence｜>more").find("after the end-of-sentence"), std::string::npos);
  EXPECT_NE(parse_error("no close<｜end▁of▁sentence｜>").find("not closed by </think>"), std::string::npos);
  EXPECT_NE(parse_error("a</think>b</think>c").find("special token '</think>'"), std::string::npos);
  EXPECT_NE(parse_error(head + "</｜DSML｜invoke>\n</｜DSML｜tool_calls>junk<｜end▁of▁sentence｜>")
                .find("after the tool calls"),
            std::string::npos);
}

TEST(ChatEncoding, BrokenConversationsNameTheMessageAndField) {
  EXPECT_NE(encode_error("{not json").find("not valid JSON"), std::string::npos);
  EXPECT_NE(encode_error("[]").find("no messages"), std::string::npos);
  EXPECT_NE(encode_error(R"({"tools": []})").find("needs 'messages'"), std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "user", "content": "a"}, {"role": "wizard", "content": "b"}])")
                .find("message 1 (wizard): 'role' is unknown"),
            std::string::npos);
  EXPECT_NE(encode_error(R"([{"content": "a"}])").find("message 0: 'role' is missing"), std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "user"}])").find("message 0 (user): 'content' is missing"), std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "user", "content": 3}])").find("'content' must be a string"),
            std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "user", "content": "q"}, {"role": "assistant", "reasoning_content": "r"}])")
                .find("message 1 (assistant): 'content' is missing"),
            std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
      "tool_calls": [{"type": "function", "function": {"arguments": "{}"}}]}])")
                .find("message 1 (assistant): 'tool_calls[0].function.name' is missing"),
            std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
      "tool_calls": [{"type": "function", "function": {"name": "f"}}]}])")
                .find("'tool_calls[0].function.arguments' is missing"),
            std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
      "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "[1]"}}]}])")
                .find("must be a JSON object"),
            std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "user", "content": "q", "task": "dance"}])").find("'task' is unknown"),
            std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "developer", "content": ""}])").find("must not be empty"), std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "user", "content": "q", "tools": []}])").find("system or developer"),
            std::string::npos);
  EXPECT_NE(encode_error(R"([{"role": "system", "content": "S", "tools": [{"type": "function", "function": {}}]}])")
                .find("'tools[0].function.name' is missing"),
            std::string::npos);
  EXPECT_NE(encode_error(R"({"tools": [{"function": {"description": "x"}}], "messages": [{"role": "user", "content": "q"}]})")
                .find("'tools[0].function.name' is missing"),
            std::string::npos);
}

TEST(ChatEncoding, ParsesModeNames) {
  EXPECT_EQ(parse_chat_mode("thinking"), ChatMode::Thinking);
  EXPECT_EQ(parse_chat_mode("chat"), ChatMode::Chat);
  EXPECT_THROW(parse_chat_mode("fast"), Error);
}
