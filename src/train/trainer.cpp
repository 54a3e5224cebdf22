#include "train/trainer.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "core/error.h"
#include "io/durable_file.h"
#include "io/token_corpus.h"
#include "model/init_dir.h"
#include "model/tensor_table.h"
#include "train/graph_adapter.h"
#include "train/monitors.h"
#include "train/run_checkpoint.h"

namespace dsv4 {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int sig) {
  if (g_stop) {  // a second signal: stop at once (the newest checkpoint stays intact)
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
  g_stop = 1;
}

bool is_indexer(const std::string& name) { return name.find(".attn.indexer.") != std::string::npos; }

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DSV4_CHECK(in.good(), "train", "cannot open '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first key path where two JSON values differ ("" when equal).
std::string first_difference(const json& a, const json& b, const std::string& path = "") {
  if (a.is_object() && b.is_object()) {
    for (const auto& [k, v] : a.items()) {
      const std::string p = path.empty() ? k : path + "." + k;
      if (!b.contains(k)) return p;
      const std::string d = first_difference(v, b[k], p);
      if (!d.empty()) return d;
    }
    for (const auto& [k, v] : b.items())
      if (!a.contains(k)) return path.empty() ? k : path + "." + k;
    return "";
  }
  return a == b ? "" : (path.empty() ? "(top level)" : path);
}

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long t = std::lround(s);
  if (t >= 3600) std::snprintf(buf, sizeof(buf), "%ldh%02ldm", t / 3600, t / 60 % 60);
  else std::snprintf(buf, sizeof(buf), "%ldm%02lds", t / 60, t % 60);
  return buf;
}

class Trainer {
 public:
  Trainer(const Recipe& r, const TrainRunOptions& o);
  TrainOutcome run();

 private:
  void start_fresh();
  void resume();
  void step_once();
  void evaluate();
  void monitor(const PackedRows& rows, AttnPhase phase);
  void save();
  void log(const json& record);
  void progress(double loss);
  TrainOptions options_for(AttnPhase phase) const;

  const Recipe& r_;
  TrainRunOptions o_;
  ModelConfig c_;
  std::string tokenizer_text_;
  std::map<std::string, std::string> model_files_;
  std::unique_ptr<TokenCorpus> corpus_;
  std::unique_ptr<DataLoader> loader_;
  Params params_;
  std::unique_ptr<Optimizer> main_opt_, indexer_opt_;
  int64_t step_ = 0, tokens_ = 0, saved_step_ = -1, nonfinite_ = 0;
  double elapsed_before_ = 0;  // seconds of earlier sessions
  std::chrono::steady_clock::time_point t0_;
  int64_t session_steps_ = 0, session_tokens_ = 0;
  std::FILE* metrics_ = nullptr;
  bool tty_ = false;
};

Trainer::Trainer(const Recipe& r, const TrainRunOptions& o) : r_(r), o_(o), c_(r.model) {
  if (r.threads > 0) {  // OpenMP loops and OpenBLAS's own thread pool alike
    omp_set_num_threads(r.threads);
    openblas_set_num_threads(r.threads);
  }
  tokenizer_text_ = read_text(r.tokenizer_path);
  const Tokenizer tokenizer = Tokenizer::from_json(tokenizer_text_, r.tokenizer_path);
  check_tokenizer_fits(c_, tokenizer, "recipe " + r.path + ": model with tokenizer " + r.tokenizer_path);
  model_files_ = {{"tokenizer.json", tokenizer_text_},
                  {"tokenizer_config.json", make_tokenizer_config(c_, tokenizer).dump(2) + "\n"},
                  {"generation_config.json", make_generation_config(c_).dump(2) + "\n"}};
  corpus_ = std::make_unique<TokenCorpus>(r.corpus_path);
  corpus_->require_tokenizer(tokenizer_identity(tokenizer_text_, tokenizer), r.tokenizer_path);
  loader_ = std::make_unique<DataLoader>(*corpus_, r.val_fraction, r.split_seed, r.seed);
  if (r.val_fraction > 0)  // fail now, not at the first evaluation
    for (const SeqStage& s : r.stages) loader_->validation(s.seq_len, 1);

  // Two optimizers: the model, and the indexer, which learns from its own KL loss at its
  // own constant rate (training.md §4) and is frozen while the main model trains densely.
  std::vector<TensorSpec> main_table, indexer_table;
  for (TensorSpec s : tensor_table(c_)) {
    if (!r.muon && s.group == ParamGroup::Muon) s.group = ParamGroup::AdamW;
    (is_indexer(s.name) ? indexer_table : main_table).push_back(s);
  }
  main_opt_ = std::make_unique<Optimizer>(main_table, r.optimizer);
  if (!indexer_table.empty()) {
    OptimizerConfig ic = r.optimizer;
    ic.schedule = LrSchedule{r.indexer_lr, 0, 0, 0, 1.0f};
    indexer_opt_ = std::make_unique<Optimizer>(indexer_table, ic);
  }
  tty_ = isatty(STDERR_FILENO);
}

void Trainer::start_fresh() {
  std::error_code ec;
  if (fs::exists(o_.run_dir, ec)) {
    DSV4_CHECK(fs::is_directory(o_.run_dir), "train", "--out '", o_.run_dir, "' exists and is not a folder");
    DSV4_CHECK(!fs::exists(fs::path(o_.run_dir) / "metrics.jsonl") && !newest_checkpoint(o_.run_dir), "train",
               "'", o_.run_dir, "' already holds a run: pass --resume to continue it, or choose another --out");
  }
  fs::create_directories(o_.run_dir);
  write_file_synced((fs::path(o_.run_dir) / "recipe.json").string(), r_.resolved.dump(2) + "\n");
  params_ = init_params(c_, r_.seed);
  metrics_ = std::fopen((fs::path(o_.run_dir) / "metrics.jsonl").string().c_str(), "w");
  DSV4_CHECK(metrics_, "train", "cannot write '", o_.run_dir, "/metrics.jsonl'");
}

void Trainer::resume() {
  const std::string stored_path = (fs::path(o_.run_dir) / "recipe.json").string();
  if (!fs::exists(stored_path) && !newest_checkpoint(o_.run_dir) &&
      !fs::exists(fs::path(o_.run_dir) / "metrics.jsonl")) {
    start_fresh();  // no run yet (or killed before it wrote anything): start it
    return;
  }
  DSV4_CHECK(fs::exists(stored_path), "train", "'", o_.run_dir, "' holds no run to resume (no recipe.json)");
  const json stored = json::parse(read_text(stored_path));
  const std::string diff = first_difference(stored, r_.resolved);
  DSV4_CHECK(diff.empty(), "train", "the recipe differs from the one '", o_.run_dir, "' was started with at '", diff,
             "': resume with the same recipe (", stored_path, ")");
  clean_run_dir(o_.run_dir);
  const auto newest = newest_checkpoint(o_.run_dir);
  if (!newest) {
    std::fprintf(stderr, "train: no checkpoint in '%s' yet: starting from step 0\n", o_.run_dir.c_str());
    params_ = init_params(c_, r_.seed);
  } else {
    LoadedCheckpoint ck = load_run_checkpoint(checkpoint_dir(o_.run_dir, *newest));
    DSV4_CHECK(config_to_json(ck.config) == config_to_json(c_), "train", ck.dir,
               ": its config.json differs from the recipe's model");
    params_ = std::move(ck.params);
    std::map<std::string, Tensor> main_state, indexer_state;
    for (auto& [name, t] : ck.optimizer_state) {
      if (name.rfind("main.", 0) == 0) main_state[name.substr(5)] = std::move(t);
      else if (name.rfind("indexer.", 0) == 0) indexer_state[name.substr(8)] = std::move(t);
      else throw Error("train", str(ck.dir, ": unknown optimizer tensor '", name, "'"));
    }
    main_opt_->load_state(main_state);
    if (indexer_opt_) indexer_opt_->load_state(indexer_state);
    const json& st = ck.trainer_state;
    DSV4_CHECK(st.value("step", int64_t{-1}) == *newest, "train", ck.dir, ": trainer_state.json names step ",
               st.value("step", int64_t{-1}));
    step_ = *newest;
    saved_step_ = step_;
    tokens_ = st.at("tokens").get<int64_t>();
    elapsed_before_ = st.value("elapsed_s", 0.0);
    loader_->restore(loader_state_from_json(st.at("loader")));
    set_latest(o_.run_dir, step_);
  }
  // Metrics past the checkpoint were made by steps that will run again: drop them.
  const std::string mpath = (fs::path(o_.run_dir) / "metrics.jsonl").string();
  std::string kept;
  if (fs::exists(mpath)) {
    std::istringstream in(read_text(mpath));
    std::string line;
    while (std::getline(in, line)) {
      const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_object() && j.value("step", int64_t{-1}) <= step_ && j.value("step", int64_t{-1}) >= 0)
        kept += line + "\n";
    }
  }
  write_file_synced(mpath + ".tmp", kept);
  rename_path(mpath + ".tmp", mpath);
  metrics_ = std::fopen(mpath.c_str(), "a");
  DSV4_CHECK(metrics_, "train", "cannot append to '", mpath, "'");
  std::fprintf(stderr, "train: resuming '%s' at step %lld of %lld\n", o_.run_dir.c_str(),
               static_cast<long long>(step_), static_cast<long long>(r_.steps));
}

void Trainer::log(const json& record) {
  const std::string line = record.dump() + "\n";
  std::fwrite(line.data(), 1, line.size(), metrics_);
  std::fflush(metrics_);
}

TrainOptions Trainer::options_for(AttnPhase phase) const {
  TrainOptions opt;
  opt.phase = phase;
  opt.quant_sim = true;
  opt.recompute = false;
  opt.mtp_weight = main_opt_->config().schedule.decaying(main_opt_->steps_done()) ? r_.mtp_weight_decay
                                                                                   : r_.mtp_weight;
  opt.balance_weight = r_.balance_weight;
  opt.indexer_weight = phase == AttnPhase::IndexerWarmup ? 1.0f
                       : phase == AttnPhase::Sparse && indexer_opt_ ? r_.indexer_kl_weight
                                                                    : 0.0f;
  return opt;
}

void Trainer::step_once() {
  const int64_t T = r_.seq_len_at(step_), B = r_.rows_at(step_);
  const AttnPhase phase = r_.phase_at(step_);
  const PackedRows rows = loader_->next(B, T);
  const TrainOptions opt = options_for(phase);
  GraphResult g = run_graph(c_, params_, rows, opt, /*backward=*/true);

  std::map<std::string, Tensor> main_grads, indexer_grads;
  for (auto& [name, t] : g.grads) (is_indexer(name) ? indexer_grads : main_grads)[name] = std::move(t);
  // In the warm-up only the indexer steps: grad_norm is then its norm, and the main
  // learning rate (logged as lr) stands still.
  double grad_norm = 0, indexer_norm = NAN;
  const float lr = main_opt_->next_lr();
  const float indexer_lr = indexer_opt_ ? indexer_opt_->next_lr() : NAN;
  if (phase == AttnPhase::IndexerWarmup) {
    grad_norm = indexer_norm = indexer_opt_->step(params_, indexer_grads);
  } else {
    grad_norm = main_opt_->step(params_, main_grads);
    if (!indexer_grads.empty()) indexer_norm = indexer_opt_->step(params_, indexer_grads);
    if (std::isfinite(grad_norm)) main_opt_->update_gate_biases(params_, g.expert_loads);
  }
  nonfinite_ = std::isfinite(grad_norm) ? 0 : nonfinite_ + 1;
  DSV4_CHECK(nonfinite_ < 10, "train", "10 steps in a row had a non-finite gradient norm (step ", step_ + 1,
             "): lower the learning rate");
  step_ += 1;
  tokens_ += B * T;
  session_steps_ += 1;
  session_tokens_ += B * T;

  json rec = {{"step", step_},        {"tokens", tokens_},         {"seq_len", T},
              {"phase", phase_name(phase)},
              {"loss", g.loss.total}, {"loss_main", g.loss.main},  {"loss_mtp", g.loss.mtp},
              {"loss_balance", g.loss.balance}, {"loss_indexer", g.loss.indexer},
              {"lr", lr},             {"grad_norm", grad_norm}};
  if (!std::isnan(indexer_norm)) {
    rec["indexer_grad_norm"] = indexer_norm;
    rec["indexer_lr"] = indexer_lr;
  }
  if (!std::isfinite(grad_norm)) rec["skipped"] = true;
  json loads = json::object();
  for (const auto& [name, load] : g.expert_loads)
    loads[name.substr(0, name.size() - std::string(".ffn.gate.bias").size())] = load_imbalance(load);
  rec["expert_load"] = loads;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  rec["elapsed_s"] = elapsed_before_ + secs;
  log(rec);
  if (r_.monitor_interval > 0 && step_ % r_.monitor_interval == 0) monitor(rows, phase);
  progress(g.loss.total);
}

void Trainer::monitor(const PackedRows& rows, AttnPhase phase) {
  // The first row of the step's batch is enough to watch the trends.
  PackedRows one;
  one.B = 1;
  one.T = rows.T;
  one.ids.assign(rows.ids.begin(), rows.ids.begin() + rows.T);
  one.starts = {rows.starts[0]};
  const HealthStats hs = health_pass(c_, params_, one, phase);
  json rec = {{"step", step_}, {"tokens", tokens_}, {"mhc_gain_fwd", hs.mhc_gain_fwd},
              {"mhc_gain_bwd", hs.mhc_gain_bwd}};
  json recall = json::object();
  for (size_t i = 0; i < hs.recall_layers.size(); ++i) {
    const std::string& l = hs.recall_layers[i];
    recall[l.substr(0, l.size() - 1)] = hs.indexer_recall[i];  // NaN is written as null
  }
  if (!hs.recall_layers.empty()) rec["indexer_recall"] = recall;
  log(rec);
}

void Trainer::evaluate() {
  if (r_.val_fraction <= 0) return;
  const int64_t T = r_.seq_len_at(std::max<int64_t>(step_ - 1, 0));
  const AttnPhase phase = r_.phase_at(std::max<int64_t>(step_ - 1, 0));
  const PackedRows rows = loader_->validation(T, r_.eval_rows);
  TrainOptions opt = options_for(phase);
  opt.indexer_weight = 0;
  const GraphResult g = run_graph(c_, params_, rows, opt, /*backward=*/false);
  log({{"step", step_}, {"tokens", tokens_}, {"val_loss", g.loss.main}, {"val_loss_mtp", g.loss.mtp},
       {"val_tokens", rows.B * rows.T}, {"seq_len", T}});
}

void Trainer::save() {
  if (saved_step_ == step_) return;
  RunSnapshot snap;
  snap.config = &c_;
  snap.params = &params_;
  snap.model_files = model_files_;
  for (auto& [name, t] : main_opt_->state()) snap.optimizer_state["main." + name] = std::move(t);
  if (indexer_opt_)
    for (auto& [name, t] : indexer_opt_->state()) snap.optimizer_state["indexer." + name] = std::move(t);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  // No randomness beyond the loader's: its shuffle is a function of (seed, epoch).
  snap.trainer_state = {{"format", "dsv4-trainer-state"},
                        {"version", 1},
                        {"step", step_},
                        {"tokens", tokens_},
                        {"loader", loader_state_to_json(loader_->state())},
                        {"rng", {{"shuffle_seed", r_.seed}, {"split_seed", r_.split_seed},
                                 {"epoch", loader_->state().epoch}}},
                        {"elapsed_s", elapsed_before_ + secs}};
  save_run_checkpoint(o_.run_dir, step_, snap, r_.keep_checkpoints);
  saved_step_ = step_;
}

// A bar redrawn in place on a terminal; otherwise a line every 2% of the run.
void Trainer::progress(double loss) {
  if (!o_.progress) return;
  const int64_t every = std::max<int64_t>(1, r_.steps / 50);
  if (!tty_ && step_ % every != 0 && step_ != r_.steps) return;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const double tps = secs > 0 ? session_tokens_ / secs : 0;
  const double eta = session_steps_ > 0 ? secs / session_steps_ * (r_.steps - step_) : NAN;
  const int width = 24, done = static_cast<int>(width * step_ / r_.steps);
  std::string bar(done, '=');
  if (done < width) bar += '>' + std::string(width - done - 1, ' ');
  std::fprintf(stderr, "%sstep %lld/%lld [%s] loss %.4f | %.0f tok/s | ETA %s   %s", tty_ ? "\r" : "",
               static_cast<long long>(step_), static_cast<long long>(r_.steps), bar.c_str(), loss, tps,
               duration(eta).c_str(), tty_ ? "" : "\n");
  std::fflush(stderr);
}

TrainOutcome Trainer::run() {
  const RunLock lock(o_.run_dir);
  if (o_.resume) resume();
  else start_fresh();
  t0_ = std::chrono::steady_clock::now();
  TrainOutcome outcome = TrainOutcome::Finished;
  const bool already_done = step_ >= r_.steps;
  while (step_ < r_.steps) {
    if (g_stop || (o_.stop_after >= 0 && step_ >= o_.stop_after)) {
      outcome = TrainOutcome::Interrupted;
      break;
    }
    step_once();
    // The last step's evaluation comes after the loop, so every run ends with one.
    if (r_.eval_interval > 0 && step_ % r_.eval_interval == 0 && step_ < r_.steps) evaluate();
    if (r_.checkpoint_interval > 0 && step_ % r_.checkpoint_interval == 0 && step_ < r_.steps) save();
  }
  if (outcome == TrainOutcome::Finished && !already_done) evaluate();
  save();
  std::fclose(metrics_);
  metrics_ = nullptr;
  if (tty_ && o_.progress) std::fprintf(stderr, "\n");
  std::fprintf(stderr, "train: %s at step %lld; checkpoint %s\n",
               outcome == TrainOutcome::Finished ? "finished" : "interrupted", static_cast<long long>(step_),
               checkpoint_dir(o_.run_dir, step_).c_str());
  return outcome;
}

}  // namespace

void install_interrupt_handler() {
  g_stop = 0;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

TrainOutcome train(const Recipe& recipe, const TrainRunOptions& options) {
  g_stop = 0;
  Trainer t(recipe, options);
  return t.run();
}

}  // namespace dsv4
