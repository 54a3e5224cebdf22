#include "train/run_checkpoint.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "io/durable_file.h"
#include "io/safetensors.h"

namespace dsv4 {

namespace fs = std::filesystem;

namespace {

constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kStateFile = "trainer_state.json";

// ckpt-<digits> → step; anything else → nullopt.
std::optional<int64_t> step_of(const std::string& name) {
  if (name.rfind("ckpt-", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return std::nullopt;
  int64_t step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

void remove_tree(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  DSV4_CHECK(!ec, "checkpoint", "cannot remove '", p.string(), "': ", ec.message());
}

// Every ckpt-<step> folder of a run that is complete (has its trainer state).
std::set<int64_t> checkpoints(const std::string& run_dir) {
  std::set<int64_t> steps;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return steps;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    const auto step = step_of(e.path().filename().string());
    if (step && e.is_directory() && !e.is_symlink() && fs::exists(e.path() / kStateFile)) steps.insert(*step);
  }
  return steps;
}

}  // namespace

RunLock::RunLock(const std::string& run_dir) {
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  DSV4_CHECK(!ec, "train", "cannot create the run folder '", run_dir, "': ", ec.message());
  const std::string path = (fs::path(run_dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  DSV4_CHECK(fd_ >= 0, "train", "cannot open '", path, "': ", std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    throw Error("train", str("another `dsv4 train` is running in '", run_dir, "' (", path, " is locked)"));
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock
}

void fault_point(const char* point) {
  const char* want = std::getenv("DSV4_TRAIN_FAULT");
  if (want && std::strcmp(want, point) == 0) ::kill(::getpid(), SIGKILL);
}

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return (fs::path(run_dir) / ("ckpt-" + std::to_string(step))).string();
}

std::optional<int64_t> newest_checkpoint(const std::string& run_dir) {
  const std::set<int64_t> steps = checkpoints(run_dir);
  if (steps.empty()) return std::nullopt;
  return *steps.rbegin();
}

void clean_run_dir(const std::string& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".staging-", 0) == 0 || name.rfind(".trash-", 0) == 0 || name == "latest.tmp") stale.push_back(e.path());
  }
  for (const fs::path& p : stale) remove_tree(p);
}

void set_latest(const std::string& run_dir, int64_t step) {
  const fs::path link = fs::path(run_dir) / "latest", tmp = fs::path(run_dir) / "latest.tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_symlink(fs::path(checkpoint_dir(run_dir, step)).filename(), tmp, ec);
  DSV4_CHECK(!ec, "checkpoint", "cannot create the symlink '", tmp.string(), "': ", ec.message());
  rename_path(tmp.string(), link.string());
  fsync_dir(run_dir);
}

std::string save_run_checkpoint(const std::string& run_dir, int64_t step, const RunSnapshot& snap, int64_t keep) {
  DSV4_CHECK(snap.config && snap.params, "checkpoint", "snapshot without a model");
  const std::string target = checkpoint_dir(run_dir, step);
  const std::string staging = (fs::path(run_dir) / (".staging-ckpt-" + std::to_string(step))).string();
  remove_tree(staging);
  // The release layout (save_params makes `staging` itself atomically), then the state files.
  save_params(staging, *snap.config, *snap.params, snap.model_files);
  fault_point("model");
  std::map<std::string, TensorView> views;
  for (const auto& [name, t] : snap.optimizer_state)
    views[name] = TensorView{DType::F32, t.shape, t.ptr(), t.data.size() * sizeof(float)};
  write_safetensors_views((fs::path(staging) / kOptimizerFile).string(), views, {{"format", "dsv4-optimizer"}});
  fault_point("optimizer");
  write_file_synced((fs::path(staging) / kStateFile).string(), snap.trainer_state.dump(2) + "\n");
  fsync_dir(staging);
  fault_point("state");

  if (fs::exists(target)) {  // a re-save of the same step: move the old one out of the way first
    const std::string trash = (fs::path(run_dir) / (".trash-ckpt-" + std::to_string(step))).string();
    remove_tree(trash);
    rename_path(target, trash);
    rename_path(staging, target);
    fsync_dir(run_dir);
    remove_tree(trash);
  } else {
    rename_path(staging, target);
    fsync_dir(run_dir);
  }
  fault_point("rename");

  set_latest(run_dir, step);
  fault_point("latest");

  if (keep > 0) {
    const std::set<int64_t> steps = checkpoints(run_dir);
    int64_t excess = static_cast<int64_t>(steps.size()) - keep;
    for (int64_t s : steps) {
      if (excess-- <= 0) break;
      if (s == step) continue;
      // Renamed out of the ckpt-<step> namespace first, so a half-removed folder never counts.
      const std::string trash = (fs::path(run_dir) / (".trash-ckpt-" + std::to_string(s))).string();
      remove_tree(trash);
      rename_path(checkpoint_dir(run_dir, s), trash);
      remove_tree(trash);
    }
  }
  return target;
}

LoadedCheckpoint load_run_checkpoint(const std::string& dir) {
  LoadedCheckpoint ck;
  ck.dir = dir;
  ck.params = load_params(dir, &ck.config);
  const std::string state_path = (fs::path(dir) / kStateFile).string();
  std::ifstream in(state_path);
  DSV4_CHECK(in.good(), "checkpoint", "'", dir, "' has no ", kStateFile,
             ": it is a model folder, not a training checkpoint");
  try {
    ck.trainer_state = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error("checkpoint", str(state_path, ": not valid JSON: ", e.what()));
  }
  SafetensorsFile opt((fs::path(dir) / kOptimizerFile).string());
  for (const auto& [name, info] : opt.tensors()) ck.optimizer_state[name] = opt.read_f32(name);
  return ck;
}

}  // namespace dsv4
