#include "io/tokenizer.h"

#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tokenizer_added.h"
#include "io/tokenizer_bpe.h"
#include "io/tokenizer_json.h"
#include "io/tokenizer_pretok.h"
#include "io/tokenizer_utf8.h"

namespace dsv4 {
namespace {

using nlohmann::json;

std::string type_of(const json& spec, const std::string& path, const std::string& where) {
  DSV4_CHECK(spec.is_object() && spec.contains("type") && spec["type"].is_string(), where, path,
             ": expected an object with a \"type\"");
  return spec["type"].get<std::string>();
}

// Only normalizers that change nothing: DeepSeek ships an empty Sequence.
void check_normalizer(const json& spec, const std::string& path, const std::string& where) {
  if (spec.is_null()) return;
  std::string type = type_of(spec, path, where);
  DSV4_CHECK(type == "Sequence", where, path, ": normalizer type '", type,
             "' is not supported (supported: null, or a Sequence of Sequences)");
  DSV4_CHECK(spec.contains("normalizers") && spec["normalizers"].is_array(), where, path,
             ".normalizers is missing or is not an array");
  for (size_t i = 0; i < spec["normalizers"].size(); ++i) {
    check_normalizer(spec["normalizers"][i], str(path, ".normalizers[", i, "]"), where);
  }
}

// TemplateProcessing's "single" template: ids around the sequence ("Sequence" item).
struct Template {
  std::vector<int32_t> before, after;
};

void add_post_processor(const json& spec, const std::string& path, const std::string& where,
                        std::vector<Template>& templates) {
  if (spec.is_null()) return;
  std::string type = type_of(spec, path, where);
  if (type == "ByteLevel") return;  // only trims offsets: the ids stay
  if (type == "Sequence") {
    DSV4_CHECK(spec.contains("processors") && spec["processors"].is_array(), where, path,
               ".processors is missing or is not an array");
    for (size_t i = 0; i < spec["processors"].size(); ++i) {
      add_post_processor(spec["processors"][i], str(path, ".processors[", i, "]"), where, templates);
    }
    return;
  }
  DSV4_CHECK(type == "TemplateProcessing", where, path, ": post-processor type '", type,
             "' is not supported (supported: ByteLevel, TemplateProcessing, Sequence)");
  DSV4_CHECK(spec.contains("single") && spec["single"].is_array(), where, path,
             ".single is missing or is not an array");
  const json specials = spec.value("special_tokens", json::object());
  Template t;
  bool seen_sequence = false;
  for (const json& item : spec["single"]) {
    if (item.contains("Sequence")) {
      seen_sequence = true;
    } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id")) {
      std::string name = item["SpecialToken"]["id"].get<std::string>();
      DSV4_CHECK(specials.contains(name) && specials[name].contains("ids"), where, path,
                 ".special_tokens has no entry '", name, "'");
      for (const json& id : specials[name]["ids"]) (seen_sequence ? t.after : t.before).push_back(id.get<int32_t>());
    } else {
      throw Error(where, path + ".single: expected {\"Sequence\": ...} or {\"SpecialToken\": ...} items");
    }
  }
  templates.push_back(std::move(t));
}

}  // namespace

struct Tokenizer::Impl {
  std::string where;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<AddedVocabulary> added;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::vector<Template> templates;
  bool byte_level_decoder = false;

  // Per id: the token's text (a view into the model's or the added tokens' tables),
  // whether it exists, whether it is special, and where its decoded bytes end in `bytes`.
  std::vector<std::string_view> token_text;
  std::vector<uint8_t> exists, special;
  std::string bytes;
  std::vector<size_t> bytes_end;
  std::string_view bytes_of(int32_t id) const {
    size_t begin = id == 0 ? 0 : bytes_end[id - 1];
    return std::string_view(bytes).substr(begin, bytes_end[id] - begin);
  }

  // Words seen before, by their raw bytes. Hugging Face keeps such a cache too: it changes
  // speed, never ids.
  static constexpr size_t kCacheCapacity = 1 << 18;
  static constexpr size_t kCacheMaxWord = 256;
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache;

  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  void check_id(int32_t id) const {
    DSV4_CHECK(id >= 0 && static_cast<size_t>(id) < exists.size() && exists[id], where, "token id ",
               id, " is not in the vocabulary (ids are 0..", static_cast<int64_t>(exists.size()) - 1, ")");
  }
};

void Tokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  {
    std::lock_guard lock(cache_mutex);
    if (auto it = cache.find(word); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t first = out.size();
  if (pre_tokenizer->byte_level()) {
    std::string mapped;
    mapped.reserve(2 * word.size());
    byte_level_map(word, mapped);
    model->tokenize(mapped, out);
  } else {
    model->tokenize(word, out);
  }
  if (word.size() <= kCacheMaxWord) {
    std::lock_guard lock(cache_mutex);
    if (cache.size() < kCacheCapacity) cache.emplace(word, std::vector<int32_t>(out.begin() + first, out.end()));
  }
}

void Tokenizer::Impl::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<std::string_view> words{text};
  std::deque<std::string> arena;
  pre_tokenizer->split(words, arena);
  for (std::string_view word : words) encode_word(word, out);
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  const std::string where = "tokenizer " + path;
  std::ifstream file(path, std::ios::binary);
  DSV4_CHECK(file.good(), where, "cannot open the file");
  std::ostringstream text;
  text << file.rdbuf();
  DSV4_CHECK(!file.bad(), where, "cannot read the file");
  return from_json(text.str(), where);
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& where) {
  TokenizerFile file = read_tokenizer_json(json_text, where);
  const json& root = file.root;
  DSV4_CHECK(root.is_object(), where, "not a tokenizer.json: the top level is not an object");
  DSV4_CHECK(root.contains("model") && root["model"].is_object(), where,
             "not a tokenizer.json: it has no \"model\" object");

  auto impl = std::make_unique<Impl>();
  impl->where = where;
  const json& model = root["model"];
  std::string model_type = model.value("type", std::string("BPE"));
  DSV4_CHECK(model_type == "BPE", where, "model type '", model_type,
             "' is not supported (only BPE, the byte-level BPE that DeepSeek uses)");
  const json null;
  auto part = [&](const char* key) -> const json& { return root.contains(key) ? root[key] : null; };
  try {
    impl->model = std::make_unique<BpeModel>(model, file.bpe, where);
    check_normalizer(part("normalizer"), "normalizer", where);
    impl->pre_tokenizer = std::make_unique<PreTokenizer>(part("pre_tokenizer"), where);
    impl->added = std::make_unique<AddedVocabulary>(part("added_tokens"), *impl->model, where);
    add_post_processor(part("post_processor"), "post_processor", where, impl->templates);
  } catch (const json::exception& e) {  // a value of the wrong JSON type somewhere
    throw Error(where, str("malformed tokenizer.json: ", e.what()));
  }
  const json& decoder = part("decoder");
  if (!decoder.is_null()) {
    std::string type = type_of(decoder, "decoder", where);
    DSV4_CHECK(type == "ByteLevel", where, "decoder type '", type,
               "' is not supported (supported: null, ByteLevel)");
    impl->byte_level_decoder = true;
  }

  // The id tables: an added token's content wins over the vocabulary entry of the same id.
  int32_t size = 0;
  for (const auto& [token, id] : impl->model->vocab()) size = std::max(size, id + 1);
  for (const auto& [id, token] : impl->added->by_id()) size = std::max(size, id + 1);
  impl->token_text.assign(size, std::string_view());
  impl->exists.assign(size, 0);
  impl->special.assign(size, 0);
  for (const auto& [token, id] : impl->model->vocab()) impl->token_text[id] = token, impl->exists[id] = 1;
  for (const auto& [id, token] : impl->added->by_id()) impl->token_text[id] = token.content, impl->exists[id] = 1;
  impl->bytes_end.assign(size, 0);
  for (int32_t id = 0; id < size; ++id) {
    std::string_view text = impl->token_text[id];
    if (impl->exists[id]) {
      impl->special[id] = impl->added->is_special(text);
      if (!impl->byte_level_decoder || !byte_level_unmap(text, impl->bytes)) impl->bytes.append(text);
    }
    impl->bytes_end[id] = impl->bytes.size();
  }
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  const Impl& m = *impl_;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  // Added tokens first: those matched in the raw text, then (after the normalizer, which
  // changes nothing here) the normalized ones in what is left.
  std::vector<TextSegment> raw_pass, segments;
  m.added->split(text, 0, options.parse_special, raw_pass);
  for (const TextSegment& s : raw_pass) {
    if (s.id >= 0) {
      segments.push_back(s);
    } else {
      m.added->split(s.text, 1, options.parse_special, segments);
    }
  }
  for (const TextSegment& s : segments) {
    if (s.id >= 0) {
      ids.push_back(s.id);
    } else {
      m.encode_text(s.text, ids);
    }
  }
  if (options.add_special_tokens) {
    for (const Template& t : m.templates) {
      ids.insert(ids.begin(), t.before.begin(), t.before.end());
      ids.insert(ids.end(), t.after.begin(), t.after.end());
    }
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    m.check_id(id);
    if (skip_special && m.special[id]) continue;
    if (!first) out += separator();
    first = false;
    out += m.bytes_of(id);
  }
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const auto& added = impl_->added->ids();
  if (auto it = added.find(token); it != added.end()) return it->second;
  return impl_->model->token_to_id(token);
}

int32_t Tokenizer::require_id(std::string_view token) const {
  auto id = token_to_id(token);
  DSV4_CHECK(id.has_value(), impl_->where, "no token '", token, "' in the vocabulary");
  return *id;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size() || !impl_->exists[id]) return std::nullopt;
  return std::string(impl_->token_text[id]);
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && impl_->special[id];
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->exists.size()); }

std::string_view Tokenizer::token_bytes(int32_t id) const {
  impl_->check_id(id);
  return impl_->bytes_of(id);
}

std::string_view Tokenizer::separator() const { return impl_->byte_level_decoder ? "" : " "; }

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  std::string_view bytes = tokenizer_->token_bytes(id);
  if (skip_special_ && tokenizer_->is_special(id)) return "";
  if (!first_) pending_ += tokenizer_->separator();
  first_ = false;
  pending_ += bytes;
  std::string out;
  pending_.erase(0, append_utf8_lossy(out, pending_, false));
  return out;
}

std::string StreamDecoder::finish() {
  std::string out;
  append_utf8_lossy(out, pending_, true);
  pending_.clear();
  first_ = true;
  return out;
}

}  // namespace dsv4
