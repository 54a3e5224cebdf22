// Generation over a randomly initialized tiny model (configs/tiny.json) with the byte
// tokenizer: greedy decoding against a from-scratch oracle, seeds, streaming, stop strings,
// EOS, the context limit, multi-turn state reuse; dsv4 init's folder and the example configs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "infer/chat_session.h"
#include "infer/generate.h"
#include "io/config.h"
#include "io/tokenizer.h"
#include "io/tokenizer_utf8.h"
#include "model/backend.h"
#include "model/init_dir.h"
#include "model/model.h"
#include "model/weights.h"

namespace dsv4 {
namespace {

const std::string kSource = DSV4_SOURCE_DIR;
const std::string kByteTokenizer = kSource + "/data/tokenizers/byte/tokenizer.json";

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

std::string scratch(const std::string& tag) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  auto p = std::filesystem::path(::testing::TempDir()) /
           ("dsv4_gen_" + std::string(info->name()) + "_" + tag + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// configs/tiny.json has 272 rows for the byte tokenizer's 271 ids: row 271 has no token,
// so it is never sampled; as the EOS id it makes a run that only the length can stop.
constexpr int kNoTokenId = 271;

ModelConfig tiny_config() { return load_config(kSource + "/configs/tiny.json"); }

const Tokenizer& byte_tokenizer() {
  static const Tokenizer t = Tokenizer::from_file(kByteTokenizer);
  return t;
}

Model tiny_model(ModelConfig c = tiny_config(), uint64_t seed = 5) {
  Params p = init_params(c, seed);
  return Model(std::move(c), std::move(p));
}

GenerateOptions greedy(int max_tokens) {
  GenerateOptions o;
  o.sampling.temperature = 0;
  o.max_tokens = max_tokens;
  return o;
}

std::vector<int32_t> prompt_ids(const Model& m, const std::string& text) {
  return encode_prompt(byte_tokenizer(), m.config(), text);
}

// What generation reads from a backend: each chunk's last row of forward()'s logits, for chunks
// of different lengths (the default of Backend::forward_last, on the CPU).
TEST(Generate, ForwardLastIsEachChunksLastRow) {
  const Model m = tiny_model();
  const int64_t V = m.config().vocab_size;
  auto a = make_backend(Device::Cpu, m, Precision::F32), b = make_backend(Device::Cpu, m, Precision::F32);
  const std::vector<std::vector<int64_t>> chunks = {{1, 2, 3, 4, 5}, {7, 8, 9}};
  std::vector<SeqChunk> batch_a, batch_b;
  for (const auto& ids : chunks) {
    batch_a.push_back({a->new_sequence(16), ids});
    batch_b.push_back({b->new_sequence(16), ids});
  }
  const ForwardOut all = a->forward(batch_a), last = b->forward_last(batch_b);
  ASSERT_EQ(last.logits.shape, (std::vector<int64_t>{2, V}));
  const std::vector<float> first_last(all.logits.ptr() + 4 * V, all.logits.ptr() + 5 * V),
      second_last(all.logits.ptr() + 7 * V, all.logits.ptr() + 8 * V);
  EXPECT_EQ(std::vector<float>(last.logits.ptr(), last.logits.ptr() + V), first_last);
  EXPECT_EQ(std::vector<float>(last.logits.ptr() + V, last.logits.ptr() + 2 * V), second_last);
}

TEST(Generate, GreedyMatchesArgmaxOfAFreshPrefillAtEveryStep) {
  Model m = tiny_model();
  Generator g(m, byte_tokenizer(), greedy(12));
  std::vector<int32_t> prompt = prompt_ids(m, "The quick brown fox");
  GenerateResult r = g.generate(prompt);
  ASSERT_FALSE(r.ids.empty());
  // Oracle: prefill prompt + ids[0..i) from position 0 in one call; ids[i] is the argmax of
  // its last row over the ids the tokenizer has (271 of the model's 272 rows).
  const int64_t V = m.config().vocab_size, tokenizer_V = byte_tokenizer().vocab_size();
  std::vector<int64_t> seq(prompt.begin(), prompt.end());
  for (size_t i = 0; i < r.ids.size(); ++i) {
    SequenceState st = m.new_state();
    Tensor logits = m.forward({Chunk{&st, seq}}).logits;
    const float* last = logits.ptr() + (static_cast<int64_t>(seq.size()) - 1) * V;
    EXPECT_EQ(r.ids[i], std::max_element(last, last + tokenizer_V) - last) << "step " << i;
    seq.push_back(r.ids[i]);
  }
  // Deterministic: a second generator gives the same ids.
  Generator g2(m, byte_tokenizer(), greedy(12));
  EXPECT_EQ(g2.generate(prompt).ids, r.ids);
}

TEST(Generate, SameSeedReproducesOtherSeedDiffers) {
  Model m = tiny_model();
  std::vector<int32_t> prompt = prompt_ids(m, "Once upon a time");
  auto run = [&](uint64_t seed) {
    GenerateOptions o;
    o.sampling.temperature = 1.0f;
    o.sampling.seed = seed;
    o.max_tokens = 24;
    Generator g(m, byte_tokenizer(), o);
    return g.generate(prompt).ids;
  };
  EXPECT_EQ(run(11), run(11));
  EXPECT_NE(run(11), run(12));
}

TEST(Generate, StreamedTextIsTheDecodeOfTheGeneratedIds) {
  Model m = tiny_model();
  GenerateOptions o;
  o.sampling.temperature = 1.5f;  // wander over many bytes, invalid UTF-8 included
  o.sampling.seed = 3;
  o.max_tokens = 48;
  Generator g(m, byte_tokenizer(), o);
  std::string streamed;
  int pieces = 0;
  GenerateResult r = g.generate(prompt_ids(m, "abc"), [&](std::string_view s) {
    streamed += s;
    ++pieces;
  });
  EXPECT_EQ(streamed, r.text);
  EXPECT_GT(pieces, 1);
  EXPECT_EQ(streamed, utf8_lossy(byte_tokenizer().decode(r.ids, /*skip_special=*/true)));
  if (r.reason == StopReason::MaxTokens) EXPECT_EQ(r.ids.size(), 48u);
  EXPECT_EQ(r.prompt_tokens, 4);  // BOS + 3 bytes
  EXPECT_EQ(r.prefilled_tokens, 4);
}

TEST(Generate, StopStringCutsTheTextAndIsNeverPrinted) {
  ModelConfig c = tiny_config();
  c.eos_token_id = kNoTokenId;
  Model m = tiny_model(c);
  GenerateOptions o = greedy(40);
  o.sampling.temperature = 0.8f;
  o.sampling.seed = 9;
  std::vector<int32_t> prompt = prompt_ids(m, "Hello");
  const std::string full = Generator(m, byte_tokenizer(), o).generate(prompt).text;
  ASSERT_GE(full.size(), 12u);
  // A stop string from the middle of the text, on character boundaries.
  auto boundary = [&](size_t i) {
    while (i < full.size() && (static_cast<unsigned char>(full[i]) & 0xC0) == 0x80) ++i;
    return i;
  };
  const size_t a = boundary(full.size() / 2), b = boundary(a + 3);
  ASSERT_LT(a, b);
  const std::string stop = full.substr(a, b - a);
  o.stop = {"never appears \x01", stop};
  std::string streamed;
  GenerateResult r = Generator(m, byte_tokenizer(), o).generate(prompt, [&](std::string_view s) { streamed += s; });
  EXPECT_EQ(r.reason, StopReason::StopString);
  EXPECT_EQ(r.text, full.substr(0, full.find(stop)));
  EXPECT_EQ(streamed, r.text);
}

TEST(StopStringFilter, HoldsBackPossibleStartsAndCutsAtTheEarliest) {
  StopStringFilter f({"o w", "END"});
  EXPECT_EQ(f.push("Hel"), "Hel");
  EXPECT_EQ(f.push("lo"), "l");  // "o" could begin "o w"
  EXPECT_EQ(f.push(" wor"), "");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.push("more"), "");
  EXPECT_EQ(f.finish(), "");

  StopStringFilter g({"END"});
  EXPECT_EQ(g.push("abcE"), "abc");
  EXPECT_EQ(g.push("N"), "");
  EXPECT_EQ(g.push("x"), "ENx");  // not a stop string after all
  EXPECT_EQ(g.push("yE"), "y");
  EXPECT_EQ(g.finish(), "E");     // the stream ended: the held-back tail is text
  EXPECT_FALSE(g.stopped());

  StopStringFilter h({"cd", "bcde"});
  EXPECT_EQ(h.push("abcdef"), "a");  // "bcde" starts first
  StopStringFilter none({});
  EXPECT_EQ(none.push("anything"), "anything");
  EXPECT_NE(error_of([] { StopStringFilter({"a", ""}); }).find("stop string 1 is empty"), std::string::npos);
}

TEST(Generate, EosStopsAndIsNotPrinted) {
  ModelConfig c = tiny_config();
  c.eos_token_id = kNoTokenId;
  std::vector<int32_t> first;
  {
    Model m = tiny_model(c);
    first = Generator(m, byte_tokenizer(), greedy(16)).generate(prompt_ids(m, "xyz")).ids;
  }
  ASSERT_EQ(first.size(), 16u);
  // Same weights, but the token greedy decoding produces at step k is now the EOS.
  const size_t k = std::find(first.begin(), first.end(), first[5]) - first.begin();
  c.eos_token_id = first[k];
  Model m = tiny_model(c);
  GenerateResult r = Generator(m, byte_tokenizer(), greedy(16)).generate(prompt_ids(m, "xyz"));
  EXPECT_EQ(r.reason, StopReason::Eos);
  ASSERT_EQ(r.ids.size(), k + 1);
  EXPECT_EQ(r.ids.back(), c.eos_token_id);
  std::vector<int32_t> before(first.begin(), first.begin() + k);
  EXPECT_EQ(r.text, utf8_lossy(byte_tokenizer().decode(before, true)));
}

TEST(Generate, ContextLimit) {
  ModelConfig c = tiny_config();
  Model m0 = tiny_model(c);
  std::vector<int32_t> prompt = prompt_ids(m0, "0123456789");  // 11 tokens
  GenerateOptions o = greedy(100);
  o.ctx = 11;
  std::string msg = error_of([&] { Generator(m0, byte_tokenizer(), o).generate(prompt); });
  EXPECT_NE(msg.find("the prompt is 11 tokens but the context holds 11 tokens"), std::string::npos) << msg;
  o.ctx = 5;
  msg = error_of([&] { Generator(m0, byte_tokenizer(), o).generate(prompt); });
  EXPECT_NE(msg.find("11 tokens"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--ctx"), std::string::npos) << msg;
  o.ctx = c.max_position_embeddings + 1;
  EXPECT_NE(error_of([&] { Generator(m0, byte_tokenizer(), o); }).find("max_position_embeddings"), std::string::npos);

  // A run that fills the context stops there: 11 + 6 = 17 tokens. The EOS is a row that
  // is never sampled, so only the context (or max tokens) can stop a run.
  c.eos_token_id = kNoTokenId;
  Model m = tiny_model(c);
  GenerateResult free_run = Generator(m, byte_tokenizer(), greedy(6)).generate(prompt);
  EXPECT_EQ(free_run.reason, StopReason::MaxTokens);
  o.ctx = 17;
  GenerateResult r = Generator(m, byte_tokenizer(), o).generate(prompt);
  EXPECT_EQ(r.reason, StopReason::ContextFull);
  EXPECT_EQ(r.ids, free_run.ids);
}

TEST(Generate, ChatModeReusesTheStateAcrossTurns) {
  Model m = tiny_model();
  Generator g(m, byte_tokenizer(), greedy(10));
  ChatSession chat(g, byte_tokenizer(), ChatMode::Chat, "Be brief.");
  GenerateResult first = chat.reply("Hi there");
  EXPECT_EQ(first.prefilled_tokens, first.prompt_tokens);
  GenerateResult second = chat.reply("And then?");
  ASSERT_EQ(chat.messages().size(), 5u);  // system, user, assistant, user, assistant
  // Only the new turn was prefilled: the previous prompt and completion were reused.
  EXPECT_EQ(second.prompt_tokens - second.prefilled_tokens,
            first.prompt_tokens + static_cast<int64_t>(first.ids.size()) - 1);
  // And the reply equals what a fresh sequence gives for the whole conversation.
  nlohmann::ordered_json upto = nlohmann::ordered_json::array();
  for (size_t i = 0; i < 4; ++i) upto.push_back(chat.messages()[i]);
  EncodeOptions eo;
  eo.add_special_tokens = false;
  std::vector<int32_t> full = byte_tokenizer().encode(encode_chat(upto, ChatMode::Chat), eo);
  EXPECT_EQ(static_cast<int64_t>(full.size()), second.prompt_tokens);
  EXPECT_EQ(Generator(m, byte_tokenizer(), greedy(10)).generate(full).ids, second.ids);

  chat.reset();
  EXPECT_EQ(chat.messages().size(), 1u);
  GenerateResult again = chat.reply("Hi there");
  EXPECT_EQ(again.ids, first.ids);
  EXPECT_EQ(again.prefilled_tokens, again.prompt_tokens);
}

TEST(Generate, ThinkingModeRePrefillsBecauseEarlierReasoningIsDropped) {
  Model m = tiny_model();
  Generator g(m, byte_tokenizer(), greedy(6));
  ChatSession chat(g, byte_tokenizer(), ChatMode::Thinking);
  chat.reply("Question one");
  GenerateResult second = chat.reply("Question two");
  EXPECT_EQ(second.prefilled_tokens, second.prompt_tokens);
}

TEST(Generate, ThinkingModeKeepingReasoningReusesTheState) {
  Model m = tiny_model();
  for (int max_tokens : {3, 12}) {  // short replies end inside the reasoning, longer ones may not
    Generator g(m, byte_tokenizer(), greedy(max_tokens));
    ChatEncodeOptions keep;
    keep.drop_thinking = false;
    ChatSession chat(g, byte_tokenizer(), ChatMode::Thinking, "", keep);
    GenerateResult first = chat.reply("Question one");
    GenerateResult second = chat.reply("Question two");
    EXPECT_EQ(second.prompt_tokens - second.prefilled_tokens,
              first.prompt_tokens + static_cast<int64_t>(first.ids.size()) - 1)
        << "max tokens " << max_tokens;
  }
}

TEST(Generate, FailedTurnLeavesTheConversationUsable) {
  Model m = tiny_model();
  GenerateOptions o = greedy(4);
  o.ctx = 40;
  Generator g(m, byte_tokenizer(), o);
  ChatSession chat(g, byte_tokenizer(), ChatMode::Chat);
  chat.reply("hi");
  const size_t n = chat.messages().size();
  EXPECT_NE(error_of([&] { chat.reply(std::string(60, 'x')); }).find("context holds 40"), std::string::npos);
  EXPECT_EQ(chat.messages().size(), n);
  GenerateResult r = chat.reply("ok");
  EXPECT_LT(r.prefilled_tokens, r.prompt_tokens);  // the state survived the refused turn
}

TEST(Generate, TokenizerMustFitTheModel) {
  ModelConfig c = tiny_config();
  c.vocab_size = 200;
  c.compress_ratios = tiny_config().compress_ratios;
  Model m = tiny_model(c);
  EXPECT_NE(error_of([&] { Generator(m, byte_tokenizer(), greedy(1)); }).find("the tokenizer has 271 tokens"),
            std::string::npos);
  EXPECT_NE(error_of([&] { check_tokenizer_fits(c, byte_tokenizer(), "cfg"); }).find("at least 271"),
            std::string::npos);
  ModelConfig d = tiny_config();
  d.eos_token_id = 271;  // a row of the model, but no token
  EXPECT_NE(error_of([&] { check_tokenizer_fits(d, byte_tokenizer(), "cfg"); }).find("eos_token_id is 271"),
            std::string::npos);
}

TEST(Generate, EncodePromptPutsBosOnce) {
  Model m = tiny_model();
  std::vector<int32_t> a = encode_prompt(byte_tokenizer(), m.config(), "hi");
  EXPECT_EQ(a, (std::vector<int32_t>{0, 2 + 'h', 2 + 'i'}));
  EXPECT_EQ(encode_prompt(byte_tokenizer(), m.config(), "<｜begin▁of▁sentence｜>hi"), a);
  EXPECT_EQ(encode_prompt(byte_tokenizer(), m.config(), "hi", false), (std::vector<int32_t>{2 + 'h', 2 + 'i'}));
  EXPECT_EQ(encode_prompt(byte_tokenizer(), m.config(), ""), (std::vector<int32_t>{0}));
  EXPECT_NE(error_of([&] { encode_prompt(byte_tokenizer(), m.config(), "", false); }).find("the prompt is empty"),
            std::string::npos);
}

TEST(InitDir, WritesALoadableReleaseFolder) {
  const std::string dir = scratch("model") + "/m";
  InitDirReport rep = init_model_dir(kSource + "/configs/tiny.json", kByteTokenizer, dir, 5);
  EXPECT_GT(rep.parameters, 0);
  EXPECT_EQ(rep.tokenizer_vocab, 271);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                        "generation_config.json"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/" + f)) << f;
  EXPECT_EQ(read_text(dir + "/tokenizer.json"), read_text(kByteTokenizer));
  auto gen = nlohmann::json::parse(read_text(dir + "/generation_config.json"));
  EXPECT_EQ(gen["bos_token_id"], 0);
  EXPECT_EQ(gen["eos_token_id"], 1);
  auto tok = nlohmann::json::parse(read_text(dir + "/tokenizer_config.json"));
  EXPECT_EQ(tok["bos_token"], "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(tok["eos_token"], "<｜end▁of▁sentence｜>");
  EXPECT_EQ(read_generation_config(dir).temperature, 1.0f);

  // The saved model is init_params' model: same greedy generation.
  Model loaded = Model::load(dir);
  Model fresh = tiny_model(tiny_config(), 5);
  std::vector<int32_t> prompt = prompt_ids(fresh, "same");
  EXPECT_EQ(Generator(loaded, byte_tokenizer(), greedy(8)).generate(prompt).ids,
            Generator(fresh, byte_tokenizer(), greedy(8)).generate(prompt).ids);
}

TEST(InitDir, RejectsATokenizerThatDoesNotFit) {
  const std::string dir = scratch("cfg");
  nlohmann::json c = nlohmann::json::parse(read_text(kSource + "/configs/tiny.json"));
  c["vocab_size"] = 256;
  std::ofstream(dir + "/small.json") << c.dump();
  std::string msg = error_of([&] { init_model_dir(dir + "/small.json", kByteTokenizer, dir + "/out", 0); });
  EXPECT_NE(msg.find("set vocab_size to at least 271"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(dir + "/out"));
  EXPECT_NE(error_of([&] { init_model_dir(kSource + "/configs/tiny.json", dir + "/none.json", dir + "/out", 0); })
                .find("cannot open the tokenizer file"),
            std::string::npos);
}

TEST(GenerationConfig, ReadsSamplingDefaults) {
  const std::string dir = scratch("gc");
  EXPECT_EQ(read_generation_config(dir).temperature, SamplingParams{}.temperature);  // no file
  std::ofstream(dir + "/generation_config.json") << R"({"temperature": 0.6, "top_p": 0.95, "top_k": 40})";
  SamplingParams p = read_generation_config(dir);
  EXPECT_FLOAT_EQ(p.temperature, 0.6f);
  EXPECT_FLOAT_EQ(p.top_p, 0.95f);
  EXPECT_EQ(p.top_k, 40);
  std::ofstream(dir + "/generation_config.json") << R"({"do_sample": false, "temperature": 0.6})";
  EXPECT_EQ(read_generation_config(dir).temperature, 0.0f);
  std::ofstream(dir + "/generation_config.json") << R"({"top_p": 3})";
  EXPECT_NE(error_of([&] { read_generation_config(dir); }).find("top-p must be in (0, 1]"), std::string::npos);
  std::ofstream(dir + "/generation_config.json") << "{";
  EXPECT_NE(error_of([&] { read_generation_config(dir); }).find("not valid JSON"), std::string::npos);
}

TEST(Configs, FlashHasTheOfficialValues) {
  ModelConfig c = load_config(kSource + "/configs/flash.json");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.num_hidden_layers, 43);
  EXPECT_EQ(c.num_attention_heads, 64);
  EXPECT_EQ(c.head_dim, 512);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.q_lora_rank, 1024);
  EXPECT_EQ(c.o_groups, 8);
  EXPECT_EQ(c.o_lora_rank, 1024);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.moe_intermediate_size, 2048);
  EXPECT_FLOAT_EQ(c.routed_scaling_factor, 1.5f);
  EXPECT_EQ(c.scoring_func, ScoringFunc::SqrtSoftplus);
  EXPECT_FLOAT_EQ(c.swiglu_limit, 10.0f);
  EXPECT_EQ(c.num_hash_layers, 3);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.index_topk, 512);
  std::vector<int> ratios = {0, 0};
  for (int i = 0; i < 20; ++i) ratios.insert(ratios.end(), {4, 128});
  ratios.insert(ratios.end(), {4, 0});
  EXPECT_EQ(c.compress_ratios, ratios);
  EXPECT_FLOAT_EQ(c.compress_rope_theta, 160000.0f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_FLOAT_EQ(c.yarn_factor, 16.0f);
  EXPECT_EQ(c.yarn_original_max_pos, 65536);
  EXPECT_EQ(c.hc_mult, 4);
  EXPECT_EQ(c.hc_sinkhorn_iters, 20);
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.max_position_embeddings, 1048576);
  EXPECT_TRUE(c.fp8_weights);
  EXPECT_TRUE(c.expert_fp4);
}

TEST(Configs, TinyFitsTheByteTokenizer) {
  ModelConfig c = tiny_config();
  EXPECT_NO_THROW(check_tokenizer_fits(c, byte_tokenizer(), "tiny"));
  EXPECT_EQ(c.num_hidden_layers, 4);
  EXPECT_EQ(c.compress_ratios, (std::vector<int>{0, 4, 16, 4, 0}));
}

}  // namespace
}  // namespace dsv4
