// dsv4 generate -m MODEL_DIR [-p TEXT | -f FILE | stdin] [--chat [--thinking] [--system TEXT]]
//               [sampling flags] [--max-tokens N] [--stop S]... [--ctx N] [-i]
// Streams the generated text to stdout as it comes; a one-line summary goes to stderr.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>
#include <string>

#include "cli.h"
#include "core/error.h"
#include "infer/chat_session.h"
#include "infer/generate.h"
#include "io/chat_encoding.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace {

void write_stdout(std::string_view s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

std::string rate(int64_t tokens, double seconds) {
  if (tokens == 0 || seconds <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", tokens / seconds);
  return buf;
}

void print_summary(const dsv4::GenerateResult& r, uint64_t seed) {
  std::fprintf(stderr,
               "prompt %lld tokens (%lld prefilled) | generated %lld tokens (%s) | prefill %s tok/s | decode %s tok/s"
               " | seed %llu\n",
               static_cast<long long>(r.prompt_tokens), static_cast<long long>(r.prefilled_tokens),
               static_cast<long long>(r.ids.size()), dsv4::stop_reason_name(r.reason),
               rate(r.prefilled_tokens, r.prefill_seconds).c_str(), rate(r.decode_steps, r.decode_seconds).c_str(),
               static_cast<unsigned long long>(seed));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DSV4_CHECK(in.good(), path, "cannot open the prompt file");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Turns from stdin, one per line, until EOF or /exit; /reset starts the conversation over.
int run_interactive(dsv4::ChatSession& session, uint64_t seed) {
  const bool tty = isatty(STDIN_FILENO);
  std::string line;
  for (;;) {
    if (tty) std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "/exit") break;
    if (line == "/reset") {
      session.reset();
      std::fprintf(stderr, "(conversation cleared)\n");
      continue;
    }
    if (line.empty()) continue;
    try {
      dsv4::GenerateResult r = session.reply(line, write_stdout);
      write_stdout("\n");
      print_summary(r, seed);
    } catch (const dsv4::Error& e) {
      // One turn's failure (say, the context is full) leaves the session usable: /reset.
      std::fprintf(stderr, "error: %s\n", e.what());
    }
  }
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"Generate text with a model folder (release layout with tokenizer.json inside)"};
  app.name(argv[0]);
  std::string model_dir, prompt_text, prompt_file, system;
  bool chat = false, thinking = false, keep_thinking = false, interactive = false, no_bos = false;
  dsv4::GenerateOptions opt;
  std::optional<uint64_t> seed;
  app.add_option("-m,--model", model_dir, "model folder (config.json, safetensors, tokenizer.json)")->required();
  auto* p_opt = app.add_option("-p,--prompt", prompt_text, "the prompt text");
  app.add_option("-f,--file", prompt_file, "read the prompt from a file")->excludes(p_opt);
  app.add_flag("--chat", chat, "wrap the prompt as a user message in the DeepSeek-V4 chat format");
  app.add_flag("--thinking", thinking, "chat in thinking mode (implies --chat)");
  app.add_flag("--keep-thinking", keep_thinking, "keep earlier turns' reasoning in the prompt (thinking mode)");
  app.add_option("--system", system, "a system message (chat)");
  app.add_flag("-i,--interactive", interactive, "multi-turn chat: one user turn per stdin line; /reset, /exit");
  app.add_flag("--no-bos", no_bos, "do not put the begin-of-sentence token before a plain prompt");
  // Sampling defaults come from the model's generation_config.json; flags override them.
  auto* temp = app.add_option("--temperature", opt.sampling.temperature, "0: greedy");
  auto* top_k = app.add_option("--top-k", opt.sampling.top_k, "keep the k most likely tokens (0: off)");
  auto* top_p = app.add_option("--top-p", opt.sampling.top_p, "keep the smallest set with this mass (1: off)");
  app.add_option("--min-p", opt.sampling.min_p, "drop tokens below min-p x the top probability (0: off)");
  auto* rep = app.add_option("--repeat-penalty", opt.sampling.repeat_penalty, "CTRL repetition penalty (1: off)");
  app.add_option("--repeat-last-n", opt.sampling.repeat_last_n, "tokens the penalty looks back at (0: all)");
  app.add_option("--seed", seed, "sampling seed (default: random, printed in the summary)");
  app.add_option("--max-tokens", opt.max_tokens, "tokens to generate at most (per turn)")->capture_default_str();
  app.add_option("--stop", opt.stop, "stop at this text (repeatable); it is not printed");
  app.add_option("--ctx", opt.ctx, "allowed context in tokens (default: the model's max_position_embeddings)");
  std::string device = "cpu", precision = "f32";
  app.add_option("--device", device, "cpu (the float32 oracle) or cuda")->capture_default_str();
  app.add_option("--precision", precision, "f32 (the spec's float32) or fast (bf16/FP8/FP4, compact caches; cuda only)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  opt.device = dsv4::parse_device(device);
  opt.precision = dsv4::parse_precision(precision);
  opt.checkpoint_dir = model_dir;

  if (interactive && (!prompt_text.empty() || !prompt_file.empty()))
    throw dsv4::Error("generate", "--interactive reads its turns from stdin: leave out -p and -f");
  chat = chat || thinking || interactive;
  if (!system.empty() && !chat) throw dsv4::Error("generate", "--system is part of the chat format: add --chat");

  const std::string tokenizer_path = (std::filesystem::path(model_dir) / "tokenizer.json").string();
  DSV4_CHECK(std::filesystem::is_directory(model_dir), model_dir, "not a folder: -m needs a model folder");
  DSV4_CHECK(std::filesystem::exists(tokenizer_path), model_dir,
             "no tokenizer.json in the model folder: copy the model's tokenizer.json there");
  const dsv4::Tokenizer tokenizer = dsv4::Tokenizer::from_file(tokenizer_path);
  const dsv4::Model model = dsv4::Model::load(model_dir);

  const dsv4::SamplingParams defaults = dsv4::read_generation_config(model_dir);
  if (!temp->count()) opt.sampling.temperature = defaults.temperature;
  if (!top_k->count()) opt.sampling.top_k = defaults.top_k;
  if (!top_p->count()) opt.sampling.top_p = defaults.top_p;
  if (!rep->count()) opt.sampling.repeat_penalty = defaults.repeat_penalty;
  opt.sampling.seed = seed ? *seed : std::random_device{}();
  dsv4::Generator generator(model, tokenizer, opt);

  const dsv4::ChatMode mode = thinking ? dsv4::ChatMode::Thinking : dsv4::ChatMode::Chat;
  dsv4::ChatEncodeOptions encode_options;
  encode_options.drop_thinking = !keep_thinking;
  dsv4::ChatSession session(generator, tokenizer, mode, system, encode_options);
  if (interactive) return run_interactive(session, opt.sampling.seed);

  const std::string text = !prompt_file.empty()  ? read_file(prompt_file)
                           : p_opt->count() > 0 ? prompt_text
                                                : std::string(std::istreambuf_iterator<char>(std::cin), {});
  dsv4::GenerateResult r =
      chat ? session.reply(text, write_stdout)
           : generator.generate(dsv4::encode_prompt(tokenizer, model.config(), text, !no_bos), write_stdout);
  if (isatty(STDOUT_FILENO)) write_stdout("\n");
  print_summary(r, opt.sampling.seed);
  return 0;
}

}  // namespace

DSV4_COMMAND(generate, "generate", "generate text from a model folder (plain, chat, or interactive chat)", run);
