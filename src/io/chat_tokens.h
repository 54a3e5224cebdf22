// The fixed text of the DeepSeek-V4 chat format: special tokens and the instruction blocks
// the prompt embeds. Shared by the encoder and the completion parser; the model was
// trained on these exact bytes.
#pragma once
#include <string>

#include "core/error.h"

namespace dsv4::chat_tokens {

inline constexpr const char* kBos = "<｜begin▁of▁sentence｜>";
inline constexpr const char* kEos = "<｜end▁of▁sentence｜>";
inline constexpr const char* kUser = "<｜User｜>";
inline constexpr const char* kAssistant = "<｜Assistant｜>";
inline constexpr const char* kLatestReminder = "<｜latest_reminder｜>";
inline constexpr const char* kThinkStart = "<think>";
inline constexpr const char* kThinkEnd = "</think>";
inline constexpr const char* kDsml = "｜DSML｜";  // tag prefix: <｜DSML｜invoke ...>
inline constexpr const char* kToolCallsBlock = "tool_calls";
inline constexpr const char* kToolResultOpen = "<tool_result>";
inline constexpr const char* kToolResultClose = "</tool_result>";

// Quick-instruction task tokens ("task" on a message).
inline constexpr const char* kTaskNames[] = {"action", "query", "authority", "domain", "title", "read_url"};

inline std::string task_token(const std::string& task) {
  for (const char* name : kTaskNames)
    if (task == name) return "<｜" + task + "｜>";
  throw Error("chat", str("unknown task '", task, "'"));
}

// The tools block: preamble + one JSON schema per line + postscript.
inline constexpr const char* kToolsPreamble = R"(## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "<｜DSML｜tool_calls>" block like the following:

<｜DSML｜tool_calls>
<｜DSML｜invoke name="$TOOL_NAME">
<｜DSML｜parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</｜DSML｜parameter>
...
</｜DSML｜invoke>
<｜DSML｜invoke name="$TOOL_NAME2">
...
</｜DSML｜invoke>
</｜DSML｜tool_calls>

String parameters should be specified as is and set `string="true"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.

Otherwise, output directly after </think> with tool calls or final response.

### Available Tool Schemas

)";

inline constexpr const char* kToolsPostscript =
    "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";

inline constexpr const char* kResponseFormatPreamble =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

// reasoning_effort = max, thinking mode: put before the first message.
inline constexpr const char* kReasoningEffortMax =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the "
    "root cause, rigorously stress-testing your logic against all potential paths, edge cases, and "
    "adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, "
    "considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

}  // namespace dsv4::chat_tokens
