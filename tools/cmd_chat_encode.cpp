// dsv4 chat-encode: a JSON conversation on stdin -> the DeepSeek-V4 prompt text on stdout.
// dsv4 chat-parse: a generated completion on stdin -> {reasoning, content, tool_calls, finished}.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "cli.h"
#include "io/chat_encoding.h"

namespace {

std::string read_stdin() {
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

void write_stdout(const std::string& s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

int run_chat_encode(int argc, char** argv) {
  CLI::App app{"Encode a conversation (JSON on stdin: a message list or {\"tools\", \"messages\"}) "
               "into the DeepSeek-V4 prompt text (stdout, exactly, no newline added)."};
  app.name(argv[0]);
  std::string mode;
  bool keep_thinking = false;
  bool no_bos = false;
  std::string effort = "default";
  app.add_option("--mode", mode, "thinking or chat")->required()->check(CLI::IsMember({"thinking", "chat"}));
  app.add_flag("--keep-thinking", keep_thinking, "keep the reasoning of earlier turns (thinking mode)");
  app.add_flag("--no-bos", no_bos, "leave out the begin-of-sentence token");
  app.add_option("--reasoning-effort", effort, "default or max (thinking mode)")
      ->check(CLI::IsMember({"default", "max"}));
  CLI11_PARSE(app, argc, argv);

  dsv4::ChatEncodeOptions options;
  options.drop_thinking = !keep_thinking;
  options.add_bos = !no_bos;
  options.reasoning_effort = effort == "max" ? dsv4::ReasoningEffort::Max : dsv4::ReasoningEffort::Default;
  write_stdout(dsv4::encode_chat_text(read_stdin(), dsv4::parse_chat_mode(mode), options));
  return 0;
}

int run_chat_parse(int argc, char** argv) {
  CLI::App app{"Parse a generated completion (stdin: the text after the prompt) into JSON "
               "{reasoning, content, tool_calls: [{name, arguments}], finished}."};
  app.name(argv[0]);
  std::string mode;
  app.add_option("--mode", mode, "thinking or chat")->required()->check(CLI::IsMember({"thinking", "chat"}));
  CLI11_PARSE(app, argc, argv);

  dsv4::ParsedCompletion parsed = dsv4::parse_completion(read_stdin(), dsv4::parse_chat_mode(mode));
  nlohmann::ordered_json out;
  out["reasoning"] = parsed.reasoning;
  out["content"] = parsed.content;
  out["tool_calls"] = nlohmann::ordered_json::array();
  for (const dsv4::ChatToolCall& call : parsed.tool_calls)
    out["tool_calls"].push_back({{"name", call.name}, {"arguments", call.arguments}});
  out["finished"] = parsed.finished;
  write_stdout(out.dump(2) + "\n");
  return 0;
}

}  // namespace

DSV4_COMMAND(chat_encode, "chat-encode", "conversation JSON (stdin) -> DeepSeek-V4 prompt text", run_chat_encode);
DSV4_COMMAND(chat_parse, "chat-parse", "completion text (stdin) -> {reasoning, content, tool_calls}", run_chat_parse);
