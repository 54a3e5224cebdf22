// Reading a tokenizer.json in one pass. The model's vocab and merges (nearly all of the
// file: 128k entries each for DeepSeek) go straight into flat lists; building them as a
// JSON tree first would cost more than all the rest of loading. Everything else becomes
// JSON as usual.
#pragma once
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "io/tokenizer_bpe.h"

namespace dsv4 {

struct TokenizerFile {
  nlohmann::json root;  // the file without model.vocab and model.merges when those were taken
  BpeData bpe;
};

// Text that is not JSON is an Error naming `where` and the position.
TokenizerFile read_tokenizer_json(std::string_view text, const std::string& where);

}  // namespace dsv4
