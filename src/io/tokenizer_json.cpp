#include "io/tokenizer_json.h"

#include <climits>

#include "core/error.h"

namespace dsv4 {
namespace {

using nlohmann::json;

// SAX events: model.vocab and model.merges are collected into BpeData, every other event
// goes to nlohmann's own tree builder. A vocab or merges of the wrong JSON type is left in
// the tree, where BpeModel reports it.
class TokenizerSax : public nlohmann::json_sax<json> {
 public:
  TokenizerSax(json& root, BpeData& bpe, const std::string& where)
      : tree_(root, true), bpe_(bpe), where_(where) {}

  bool null() override { return scalar(-1, nullptr, [&] { return tree_.null(); }); }
  bool boolean(bool v) override { return scalar(-1, nullptr, [&] { return tree_.boolean(v); }); }
  bool number_integer(number_integer_t v) override {
    return scalar(v >= 0 && v <= INT32_MAX ? v : -1, nullptr, [&] { return tree_.number_integer(v); });
  }
  bool number_unsigned(number_unsigned_t v) override {
    return scalar(v <= INT32_MAX ? static_cast<int64_t>(v) : -1, nullptr, [&] { return tree_.number_unsigned(v); });
  }
  bool number_float(number_float_t v, const string_t& s) override {
    return scalar(-1, nullptr, [&] { return tree_.number_float(v, s); });
  }
  bool string(string_t& v) override { return scalar(-1, &v, [&] { return tree_.string(v); }); }
  bool binary(binary_t& v) override { return scalar(-1, nullptr, [&] { return tree_.binary(v); }); }

  bool key(string_t& k) override {
    switch (mode_) {
      case Mode::Vocab: key_ = std::move(k); return true;
      case Mode::Skip: return true;
      default: break;
    }
    if (depth_ == 1) root_key_ = k;
    if (in_model_ && depth_ == 2 && (k == "vocab" || k == "merges")) {
      mode_ = k == "vocab" ? Mode::VocabPending : Mode::MergesPending;
      pending_key_ = k;
      return true;
    }
    return tree_.key(k);
  }

  bool start_object(std::size_t n) override { return start(true, n); }
  bool start_array(std::size_t n) override { return start(false, n); }
  bool end_object() override { return end(true); }
  bool end_array() override { return end(false); }

  bool parse_error(std::size_t position, const std::string& last_token,
                   const nlohmann::detail::exception& e) override {
    throw Error(where_, str("not a tokenizer.json: not valid JSON at byte ", position, " near '",
                            last_token, "' (", e.what(), ")"));
  }

 private:
  enum class Mode {
    Tree,           // building the tree
    VocabPending,   // after the key model.vocab
    Vocab,          // inside model.vocab
    MergesPending,  // after the key model.merges
    Merges,         // inside model.merges
    MergePair,      // inside one ["a", "b"] merge
    Skip,           // inside a value that is malformed where it is
  };

  // A value that is not a container. id: its value as a vocabulary id; text: its string.
  template <typename ToTree>
  bool scalar(int64_t id, string_t* text, ToTree to_tree) {
    switch (mode_) {
      case Mode::Tree: return to_tree();
      case Mode::VocabPending:
      case Mode::MergesPending:
        mode_ = Mode::Tree;
        tree_.key(pending_key_);
        return to_tree();
      case Mode::Vocab: bpe_.vocab.push_back({std::move(key_), id}); return true;
      case Mode::Merges:
        if (text) {
          bpe_.merges.push_back({BpeData::Merge::Line, std::move(*text), {}});
        } else {
          bpe_.merges.push_back({BpeData::Merge::Malformed, {}, {}});
        }
        return true;
      case Mode::MergePair:
        if (text && pair_parts_ < 2) {
          (pair_parts_ == 0 ? pair_.first : pair_.second) = std::move(*text);
        } else {
          pair_.kind = BpeData::Merge::Malformed;
        }
        ++pair_parts_;
        return true;
      case Mode::Skip: return true;
    }
    return true;
  }

  bool start(bool object, std::size_t n) {
    switch (mode_) {
      case Mode::Tree:
        if (object && depth_ == 1 && root_key_ == "model") in_model_ = true;
        ++depth_;
        return object ? tree_.start_object(n) : tree_.start_array(n);
      case Mode::VocabPending:
      case Mode::MergesPending:
        if (object == (mode_ == Mode::VocabPending)) {
          (object ? bpe_.has_vocab : bpe_.has_merges) = true;
          mode_ = object ? Mode::Vocab : Mode::Merges;
          return true;
        }
        mode_ = Mode::Tree;
        tree_.key(pending_key_);
        return start(object, n);
      case Mode::Vocab:
        bpe_.vocab.push_back({std::move(key_), -1});
        return skip(Mode::Vocab);
      case Mode::Merges:
        if (object) {
          bpe_.merges.push_back({BpeData::Merge::Malformed, {}, {}});
          return skip(Mode::Merges);
        }
        pair_ = {BpeData::Merge::Pair, {}, {}};
        pair_parts_ = 0;
        mode_ = Mode::MergePair;
        return true;
      case Mode::MergePair:
        pair_.kind = BpeData::Merge::Malformed;
        ++pair_parts_;
        return skip(Mode::MergePair);
      case Mode::Skip:
        ++skip_depth_;
        return true;
    }
    return true;
  }

  bool end(bool object) {
    switch (mode_) {
      case Mode::Vocab:
      case Mode::Merges:
        mode_ = Mode::Tree;
        return true;
      case Mode::MergePair:
        if (pair_parts_ != 2) pair_.kind = BpeData::Merge::Malformed;
        bpe_.merges.push_back(std::move(pair_));
        mode_ = Mode::Merges;
        return true;
      case Mode::Skip:
        if (--skip_depth_ == 0) mode_ = skip_return_;
        return true;
      default:
        --depth_;
        if (depth_ == 1) in_model_ = false;
        return object ? tree_.end_object() : tree_.end_array();
    }
  }

  bool skip(Mode back) {
    mode_ = Mode::Skip;
    skip_return_ = back;
    skip_depth_ = 1;
    return true;
  }

  nlohmann::detail::json_sax_dom_parser<json> tree_;
  BpeData& bpe_;
  const std::string& where_;
  Mode mode_ = Mode::Tree;
  Mode skip_return_ = Mode::Tree;
  int skip_depth_ = 0;
  int depth_ = 0;  // containers open in the tree
  bool in_model_ = false;
  std::string root_key_, pending_key_, key_;
  BpeData::Merge pair_{BpeData::Merge::Pair, {}, {}};
  int pair_parts_ = 0;
};

}  // namespace

TokenizerFile read_tokenizer_json(std::string_view text, const std::string& where) {
  TokenizerFile file;
  TokenizerSax sax(file.root, file.bpe, where);
  json::sax_parse(text, &sax);
  return file;
}

}  // namespace dsv4
