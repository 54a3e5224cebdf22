#include "io/tokenizer_bpe.h"

#include <algorithm>
#include <climits>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tokenizer_utf8.h"

namespace dsv4 {
namespace {

std::string optional_string(const nlohmann::json& model, const char* key, const std::string& where) {
  if (!model.contains(key) || model[key].is_null()) return "";
  DSV4_CHECK(model[key].is_string(), where, "model.", key, " must be a string or null");
  return model[key].get<std::string>();
}

bool optional_bool(const nlohmann::json& model, const char* key, const std::string& where) {
  if (!model.contains(key) || model[key].is_null()) return false;
  DSV4_CHECK(model[key].is_boolean(), where, "model.", key, " must be true or false");
  return model[key].get<bool>();
}

}  // namespace

BpeModel::BpeModel(const nlohmann::json& model, const BpeData& data, const std::string& where) {
  DSV4_CHECK(data.has_vocab, where, "model.vocab is missing or is not an object of token -> id");
  DSV4_CHECK(data.has_merges, where, "model.merges is missing or is not an array");
  vocab_.reserve(data.vocab.size());
  for (const BpeData::Entry& entry : data.vocab) {
    DSV4_CHECK(entry.id >= 0, where, "model.vocab['", entry.token, "']: the id must be an integer in [0, 2^31)");
    vocab_.emplace(entry.token, static_cast<int32_t>(entry.id));
  }

  if (model.contains("dropout") && !model["dropout"].is_null()) {
    DSV4_CHECK(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0, where,
               "model.dropout is not supported (it makes encoding random): set it to null");
  }
  continuing_subword_prefix_ = optional_string(model, "continuing_subword_prefix", where);
  end_of_word_suffix_ = optional_string(model, "end_of_word_suffix", where);
  fuse_unk_ = optional_bool(model, "fuse_unk", where);
  byte_fallback_ = optional_bool(model, "byte_fallback", where);
  ignore_merges_ = optional_bool(model, "ignore_merges", where);
  std::string unk = optional_string(model, "unk_token", where);
  if (!unk.empty()) {
    auto id = token_to_id(unk);
    DSV4_CHECK(id.has_value(), where, "model.unk_token '", unk, "' is not in the vocabulary");
    unk_id_ = *id;
  }

  merges_.reserve(data.merges.size());
  uint32_t rank = 0;
  std::string merged;
  for (size_t i = 0; i < data.merges.size(); ++i) {
    const BpeData::Merge& m = data.merges[i];
    std::string_view a = m.first, b = m.second;
    if (m.kind == BpeData::Merge::Line) {
      std::string_view line = m.first;
      if (line.substr(0, 8) == "#version") continue;  // a merges.txt header, not a merge
      size_t space = line.find(' ');
      DSV4_CHECK(space != std::string_view::npos && line.find(' ', space + 1) == std::string_view::npos,
                 where, "model.merges[", i, "] = '", line, "': expected two tokens separated by one space");
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else {
      DSV4_CHECK(m.kind == BpeData::Merge::Pair, where, "model.merges[", i,
                 "]: expected \"a b\" or [\"a\", \"b\"]");
    }
    auto a_id = token_to_id(a);
    auto b_id = token_to_id(b);
    DSV4_CHECK(a_id.has_value(), where, "model.merges[", i, "]: token '", a, "' is not in the vocabulary");
    DSV4_CHECK(b_id.has_value(), where, "model.merges[", i, "]: token '", b, "' is not in the vocabulary");
    // The merged token drops the right part's continuing-subword prefix.
    size_t prefix = continuing_subword_prefix_.size();
    DSV4_CHECK(b.size() >= prefix, where, "model.merges[", i, "]: token '", b,
               "' is shorter than the continuing_subword_prefix");
    merged.assign(a);
    merged.append(b.substr(prefix));
    auto new_id = token_to_id(merged);
    DSV4_CHECK(new_id.has_value(), where, "model.merges[", i, "]: the merged token '", merged,
               "' is not in the vocabulary");
    // A repeated pair keeps its last rank, as in Hugging Face's map.
    merges_.insert_or_assign(pair_key(*a_id, *b_id), Merge{rank++, *new_id});
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
  int32_t pending_unk = -1;  // an unk token not emitted yet (fuse_unk may extend it)
  std::string decorated;
  for (size_t pos = 0; pos < word.size();) {
    size_t len = utf8_char_length(word, pos);
    std::string_view piece = word.substr(pos, len);
    bool first = pos == 0, last = pos + len == word.size();
    pos += len;
    if ((!first && !continuing_subword_prefix_.empty()) || (last && !end_of_word_suffix_.empty())) {
      decorated.assign(first ? "" : continuing_subword_prefix_);
      decorated.append(piece);
      if (last) decorated.append(end_of_word_suffix_);
      piece = decorated;
    }
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      if (pending_unk >= 0) ids.push_back(pending_unk);
      pending_unk = -1;
      ids.push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      size_t before = ids.size();
      bool all_found = true;
      for (unsigned char byte : piece) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", byte);
        auto id = token_to_id(name);
        if (!id) {
          all_found = false;
          break;
        }
        ids.push_back(*id);
      }
      if (all_found) continue;
      ids.resize(before);
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !fuse_unk_) ids.push_back(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) ids.push_back(pending_unk);
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  std::vector<int32_t> ids;
  initial_symbols(word, ids);
  if (ids.size() < 2) {
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }

  // Symbols as a doubly linked list; a merge absorbs the right symbol into the left one.
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  const auto n = static_cast<int32_t>(ids.size());
  std::vector<Symbol> symbols(n);
  for (int32_t i = 0; i < n; ++i) symbols[i] = {ids[i], i - 1, i + 1 < n ? i + 1 : -1, true};

  struct Candidate {
    uint32_t rank;
    int32_t pos;  // the left symbol of the pair
    int32_t new_id;
  };
  // std heaps keep the largest on top: "less" means a later (rank, pos).
  auto later = [](const Candidate& x, const Candidate& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  std::vector<Candidate> heap;
  heap.reserve(n);
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const Merge* m = find_merge(ids[i], ids[i + 1])) heap.push_back({m->rank, i, m->new_id});
  }
  std::make_heap(heap.begin(), heap.end(), later);
  auto push = [&](const Merge* m, int32_t pos) {
    heap.push_back({m->rank, pos, m->new_id});
    std::push_heap(heap.begin(), heap.end(), later);
  };

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // A stale candidate: the pair at this position changed since it was queued.
    const Merge* current = find_merge(left.id, right.id);
    if (!current || current->new_id != top.new_id) continue;

    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* m = find_merge(symbols[left.prev].id, left.id)) push(m, left.prev);
    }
    if (left.next >= 0) {
      if (const Merge* m = find_merge(left.id, symbols[left.next].id)) push(m, top.pos);
    }
  }
  for (const Symbol& s : symbols) {
    if (s.alive) out.push_back(s.id);
  }
}

}  // namespace dsv4
