#include "train/recipe.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"

namespace dsv4 {

namespace fs = std::filesystem;
using nlohmann::json;

const char* phase_name(AttnPhase p) {
  switch (p) {
    case AttnPhase::Dense: return "dense";
    case AttnPhase::IndexerWarmup: return "indexer_warmup";
    case AttnPhase::Sparse: return "sparse";
  }
  return "?";
}

namespace {

// One JSON object of the recipe: typed getters that name the key path in errors, and a
// final check that no key was left unread (a typo is an error, not a silent default).
class Obj {
 public:
  Obj(const json& j, std::string path, const std::string& where) : j_(j), path_(std::move(path)), where_(where) {
    if (!j.is_object()) fail("", str("must be an object, found ", j.dump()));
  }

  [[noreturn]] void fail(const std::string& key, const std::string& msg) const {
    const std::string k = key.empty() ? path_ : path_.empty() ? key : path_ + "." + key;
    throw Error("recipe", str(where_, ": '", k.empty() ? "(top level)" : k, "' ", msg));
  }
  bool has(const std::string& key) const { return j_.contains(key); }
  const json& at(const std::string& key) {
    seen_.insert(key);
    if (!j_.contains(key)) fail(key, "is missing");
    return j_.at(key);
  }
  std::string key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  int64_t integer(const std::string& key, std::optional<int64_t> def, int64_t lo,
                  int64_t hi = INT64_MAX) {
    if (!has(key) && def) return seen_.insert(key), *def;
    const json& v = at(key);
    if (!v.is_number_integer()) fail(key, str("must be an integer, found ", v.dump()));
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      fail(key, str("is too large: ", v.dump()));
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) fail(key, str("must lie in [", lo, ", ", hi, "], found ", x));
    return x;
  }
  double number(const std::string& key, std::optional<double> def, double lo, double hi, bool open_lo = false) {
    if (!has(key) && def) return seen_.insert(key), *def;
    const json& v = at(key);
    if (!v.is_number()) fail(key, str("must be a number, found ", v.dump()));
    const double x = v.get<double>();
    if (!std::isfinite(x) || x < lo || x > hi || (open_lo && x == lo))
      fail(key, str("must lie in ", open_lo ? "(" : "[", lo, ", ", hi, "], found ", x));
    return x;
  }
  std::string string(const std::string& key, std::optional<std::string> def = {}) {
    if (!has(key) && def) return seen_.insert(key), *def;
    const json& v = at(key);
    if (!v.is_string() || v.get<std::string>().empty()) fail(key, str("must be a non-empty string, found ", v.dump()));
    return v.get<std::string>();
  }
  void done() const {
    for (const auto& [k, v] : j_.items())
      if (!seen_.count(k)) fail(k, "is not a recipe key (misspelled?)");
  }

 private:
  const json& j_;
  std::string path_;
  const std::string& where_;
  std::set<std::string> seen_;
};

std::string resolve(const std::string& base_dir, const std::string& p) {
  const fs::path path(p);
  return (path.is_absolute() ? path : fs::absolute(fs::path(base_dir) / path)).lexically_normal().string();
}

// A list of spans [{..., "steps": n | "tokens": n}, ...]: each but the last gives its
// length; the last may omit it (runs to the end). Calls make(obj, first, end) per entry.
template <class Make>
void spans(const json& list, const std::string& key, const std::string& where, int64_t steps,
           int64_t tokens_per_step, Make&& make) {
  if (!list.is_array() || list.empty())
    throw Error("recipe", str(where, ": '", key, "' must be a non-empty list"));
  int64_t first = 0;
  for (size_t i = 0; i < list.size(); ++i) {
    Obj o(list[i], str(key, "[", i, "]"), where);
    const bool last = i + 1 == list.size();
    int64_t len = 0;
    if (o.has("steps") && o.has("tokens")) o.fail("", "gives both 'steps' and 'tokens': give one");
    if (o.has("steps")) {
      len = o.integer("steps", {}, 1);
    } else if (o.has("tokens")) {
      const int64_t t = o.integer("tokens", {}, 1);
      if (t % tokens_per_step) o.fail("tokens", str(t, " is not a multiple of tokens_per_step ", tokens_per_step));
      len = t / tokens_per_step;
    } else if (!last) {
      o.fail("", "needs 'steps' or 'tokens' (only the last entry may run to the end)");
    }
    const int64_t end = last ? steps : first + len;
    if (end > steps || (last && len && first + len != steps))
      o.fail("", str("ends at step ", first + len, " but the run has ", steps, " steps"));
    if (end <= first) o.fail("", str("starts at step ", first, ", after the run's ", steps, " steps"));
    make(o, first, end);
    o.done();
    first = end;
  }
}

}  // namespace

int64_t Recipe::seq_len_at(int64_t step) const {
  for (const SeqStage& s : stages)
    if (step < s.end_step) return s.seq_len;
  return stages.back().seq_len;
}

AttnPhase Recipe::phase_at(int64_t step) const {
  for (const PhaseSpan& p : phases)
    if (step < p.end_step) return p.phase;
  return phases.back().phase;
}

Recipe parse_recipe(const json& j, const std::string& where, const std::string& base_dir) {
  Recipe r;
  r.path = where;
  r.resolved = j;
  Obj top(j, "", where);

  const json& model = top.at("model");
  if (model.is_string()) {
    const std::string p = resolve(base_dir, model.get<std::string>());
    std::ifstream in(p);
    if (!in.good()) top.fail("model", str("names '", p, "', which cannot be read"));
    try {
      r.model_json = json::parse(in);
    } catch (const json::exception& e) {
      top.fail("model", str("names '", p, "', which is not JSON: ", e.what()));
    }
    r.model = parse_config(r.model_json, p);
    r.resolved["model"] = p;
  } else if (model.is_object()) {
    r.model_json = model;
    r.model = parse_config(model, where + ": 'model'");
  } else {
    top.fail("model", "must be a config.json path or an inline config object");
  }
  r.tokenizer_path = resolve(base_dir, top.string("tokenizer"));
  r.resolved["tokenizer"] = r.tokenizer_path;
  if (!fs::exists(r.tokenizer_path)) top.fail("tokenizer", str("names '", r.tokenizer_path, "', which does not exist"));

  {
    Obj d(top.at("data"), "data", where);
    r.corpus_path = resolve(base_dir, d.string("corpus"));
    r.resolved["data"]["corpus"] = r.corpus_path;
    if (!fs::exists(r.corpus_path))
      d.fail("corpus", str("names '", r.corpus_path, "', which does not exist (make it with `dsv4 tokenize`)"));
    r.val_fraction = d.number("val_fraction", 0.02, 0.0, 0.5);
    r.split_seed = static_cast<uint64_t>(d.integer("split_seed", 0, 0));
    d.done();
  }

  r.steps = top.integer("steps", {}, 1);
  r.tokens_per_step = top.integer("tokens_per_step", {}, 2);
  r.seed = static_cast<uint64_t>(top.integer("seed", 0, 0));
  r.threads = static_cast<int>(top.integer("threads", 0, 0, 1024));

  spans(top.at("seq_len_stages"), "seq_len_stages", where, r.steps, r.tokens_per_step,
        [&](Obj& o, int64_t first, int64_t end) {
          const int64_t T = o.integer("seq_len", {}, 2, r.model.max_position_embeddings);
          if (r.tokens_per_step % T)
            o.fail("seq_len", str(T, " does not divide tokens_per_step ", r.tokens_per_step));
          r.stages.push_back({T, first, end});
        });

  bool has_csa = false;
  for (int l = 0; l < r.model.num_hidden_layers; ++l) has_csa = has_csa || r.model.ratio(l) == 4;
  spans(top.at("attention_phases"), "attention_phases", where, r.steps, r.tokens_per_step,
        [&](Obj& o, int64_t first, int64_t end) {
          const std::string name = o.string("phase");
          AttnPhase p;
          if (name == "dense") p = AttnPhase::Dense;
          else if (name == "indexer_warmup") p = AttnPhase::IndexerWarmup;
          else if (name == "sparse") p = AttnPhase::Sparse;
          else o.fail("phase", str("is '", name, "': use dense, indexer_warmup or sparse"));
          if (!r.phases.empty() && static_cast<int>(p) <= static_cast<int>(r.phases.back().phase))
            o.fail("phase", str("'", name, "' after '", phase_name(r.phases.back().phase),
                                "': phases go dense -> indexer_warmup -> sparse, each at most once"));
          if (p == AttnPhase::IndexerWarmup && !has_csa)
            o.fail("phase", "indexer_warmup needs a model with CSA layers (a compress ratio of 4)");
          r.phases.push_back({p, first, end});
        });

  {
    Obj s(top.at("lr_schedule"), "lr_schedule", where);
    LrSchedule& lr = r.optimizer.schedule;
    lr.peak = static_cast<float>(s.number("peak", {}, 0.0, 10.0, /*open_lo=*/true));
    lr.warmup_steps = s.integer("warmup_steps", 0, 0);
    lr.constant_steps = s.integer("constant_steps", 0, 0);
    lr.decay_steps = s.integer("decay_steps", 0, 0);
    lr.floor_ratio = static_cast<float>(s.number("floor_ratio", 0.1, 0.0, 1.0));
    s.done();
  }
  if (top.has("optimizer")) {
    Obj o(top.at("optimizer"), "optimizer", where);
    const std::string m = o.string("matrices", "muon");
    if (m != "muon" && m != "adamw") o.fail("matrices", str("is '", m, "': use muon or adamw"));
    r.muon = m == "muon";
    r.optimizer.clip_norm = static_cast<float>(o.number("clip_norm", 1.0, 0.0, 1e6));
    r.optimizer.bias_gamma = static_cast<float>(o.number("bias_gamma", 0.001, 0.0, 1.0));
    if (o.has("muon")) {
      Obj u(o.at("muon"), "optimizer.muon", where);
      MuonConfig& mc = r.optimizer.muon;
      mc.momentum = static_cast<float>(u.number("momentum", mc.momentum, 0.0, 1.0));
      mc.update_scale = static_cast<float>(u.number("update_scale", mc.update_scale, 0.0, 100.0, true));
      mc.weight_decay = static_cast<float>(u.number("weight_decay", mc.weight_decay, 0.0, 1.0));
      u.done();
    }
    if (o.has("adamw")) {
      Obj a(o.at("adamw"), "optimizer.adamw", where);
      AdamWConfig& ac = r.optimizer.adamw;
      ac.beta1 = static_cast<float>(a.number("beta1", ac.beta1, 0.0, 1.0));
      ac.beta2 = static_cast<float>(a.number("beta2", ac.beta2, 0.0, 1.0));
      ac.eps = static_cast<float>(a.number("eps", ac.eps, 0.0, 1.0, true));
      ac.weight_decay = static_cast<float>(a.number("weight_decay", ac.weight_decay, 0.0, 1.0));
      a.done();
    }
    o.done();
  }
  if (top.has("indexer")) {
    Obj o(top.at("indexer"), "indexer", where);
    r.indexer_lr = static_cast<float>(o.number("lr", r.indexer_lr, 0.0, 10.0, true));
    r.indexer_kl_weight = static_cast<float>(o.number("kl_weight", r.indexer_kl_weight, 0.0, 100.0));
    o.done();
  }
  if (top.has("losses")) {
    Obj o(top.at("losses"), "losses", where);
    r.mtp_weight = static_cast<float>(o.number("mtp_weight", r.mtp_weight, 0.0, 10.0));
    r.mtp_weight_decay = static_cast<float>(o.number("mtp_weight_decay", r.mtp_weight_decay, 0.0, 10.0));
    r.balance_weight = static_cast<float>(o.number("balance_weight", r.balance_weight, 0.0, 10.0));
    o.done();
  }
  if (top.has("eval")) {
    Obj o(top.at("eval"), "eval", where);
    r.eval_interval = o.integer("interval_steps", 0, 0);
    r.eval_rows = o.integer("rows", r.eval_rows, 1);
    o.done();
  }
  if (r.val_fraction == 0 && top.has("eval"))
    top.fail("eval", "needs a validation split: set data.val_fraction > 0");
  if (top.has("checkpoint")) {
    Obj o(top.at("checkpoint"), "checkpoint", where);
    r.checkpoint_interval = o.integer("interval_steps", 0, 0);
    r.keep_checkpoints = o.integer("keep", r.keep_checkpoints, 0);
    o.done();
  }
  r.monitor_interval = top.integer("monitor_interval_steps", r.monitor_interval, 0);
  top.done();
  return r;
}

Recipe load_recipe(const std::string& path) {
  std::ifstream in(path);
  DSV4_CHECK(in.good(), "recipe", "cannot open '", path, "'");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw Error("recipe", str(path, ": not valid JSON: ", e.what()));
  }
  return parse_recipe(j, path, fs::path(path).parent_path().string());
}

}  // namespace dsv4
