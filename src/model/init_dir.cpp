#include "model/init_dir.h"

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "model/weights.h"

namespace dsv4 {

using nlohmann::ordered_json;

void check_tokenizer_fits(const ModelConfig& config, const Tokenizer& tokenizer, const std::string& where) {
  DSV4_CHECK(tokenizer.vocab_size() <= config.vocab_size, where, "the tokenizer has ids up to ",
             tokenizer.vocab_size() - 1, " but vocab_size is ", config.vocab_size, ": set vocab_size to at least ",
             tokenizer.vocab_size());
  for (auto [key, id] : {std::pair{"bos_token_id", config.bos_token_id}, std::pair{"eos_token_id", config.eos_token_id}})
    DSV4_CHECK(tokenizer.id_to_token(id).has_value(), where, key, " is ", id,
               " but the tokenizer has no token with that id: point it at the tokenizer's ",
               key[0] == 'b' ? "begin" : "end", "-of-sentence token");
}

ordered_json make_tokenizer_config(const ModelConfig& config, const Tokenizer& tokenizer) {
  const std::string bos = *tokenizer.id_to_token(config.bos_token_id);
  const std::string eos = *tokenizer.id_to_token(config.eos_token_id);
  // DeepSeek's own tokenizer_config.json: BOS added, EOS not, EOS doubles as padding.
  return ordered_json{{"add_bos_token", true},
                      {"add_eos_token", false},
                      {"bos_token", bos},
                      {"eos_token", eos},
                      {"pad_token", eos},
                      {"unk_token", nullptr},
                      {"clean_up_tokenization_spaces", false},
                      {"legacy", true},
                      {"model_max_length", config.max_position_embeddings},
                      {"tokenizer_class", "PreTrainedTokenizerFast"}};
}

ordered_json make_generation_config(const ModelConfig& config) {
  // DeepSeek-V4's recommended sampling: temperature 1, top_p 1.
  return ordered_json{{"_from_model_config", true},
                      {"bos_token_id", config.bos_token_id},
                      {"eos_token_id", config.eos_token_id},
                      {"do_sample", true},
                      {"temperature", 1.0},
                      {"top_p", 1.0}};
}

InitDirReport init_model_dir(const std::string& config_path, const std::string& tokenizer_path,
                             const std::string& out_dir, uint64_t seed) {
  InitDirReport report;
  report.config = load_config(config_path);
  std::ifstream in(tokenizer_path, std::ios::binary);
  DSV4_CHECK(in.good(), tokenizer_path, "cannot open the tokenizer file");
  std::stringstream tokenizer_text;
  tokenizer_text << in.rdbuf();
  const Tokenizer tokenizer = Tokenizer::from_json(tokenizer_text.str(), tokenizer_path);
  check_tokenizer_fits(report.config, tokenizer, config_path + " with " + tokenizer_path);
  report.tokenizer_vocab = tokenizer.vocab_size();

  const Params params = init_params(report.config, seed);
  for (const auto& [name, t] : params.f32) report.parameters += t.numel();
  save_params(out_dir, report.config, params,
              {{"tokenizer.json", tokenizer_text.str()},
               {"tokenizer_config.json", make_tokenizer_config(report.config, tokenizer).dump(2) + "\n"},
               {"generation_config.json", make_generation_config(report.config).dump(2) + "\n"}});
  return report;
}

}  // namespace dsv4
