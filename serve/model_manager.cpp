#include "serve/model_manager.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "engine/errors.h"
#include "storage/model_dir.h"
#include "serve/log.h"

namespace tandem::serve {
namespace fs = std::filesystem;

std::string VersionPolicy::str() const {
  switch (kind) {
    case Kind::Latest: return "latest " + std::to_string(num_versions);
    case Kind::All: return "all";
    case Kind::Specific: {
      std::string s = "specific {";
      for (size_t i = 0; i < versions.size(); ++i) s += (i ? ", " : "") + std::to_string(versions[i]);
      return s + "}";
    }
  }
  return "?";
}

std::vector<int64_t> aspired_versions(const VersionPolicy& policy, const std::vector<int64_t>& present) {
  std::vector<int64_t> out;
  switch (policy.kind) {
    case VersionPolicy::Kind::Latest: {
      const size_t n = static_cast<size_t>(std::max<int64_t>(policy.num_versions, 1));
      out.assign(present.size() > n ? present.end() - static_cast<std::ptrdiff_t>(n) : present.begin(), present.end());
      break;
    }
    case VersionPolicy::Kind::All: out = present; break;
    case VersionPolicy::Kind::Specific:
      for (int64_t v : present)
        if (std::find(policy.versions.begin(), policy.versions.end(), v) != policy.versions.end()) out.push_back(v);
      break;
  }
  return out;
}

static bool valid_label(const std::string& label) {
  return !label.empty() && std::all_of(label.begin(), label.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

void validate_config(const ServerConfig& config) {
  std::set<std::string> names;
  for (const ModelSource& m : config) {
    if (m.name.empty()) fail(Code::INVALID_ARGUMENT, "a model config has an empty name");
    if (m.name.find_first_of("/:") != std::string::npos)
      fail(Code::INVALID_ARGUMENT, "model name '" + m.name + "' contains '/' or ':', which REST paths cannot carry");
    if (!names.insert(m.name).second) fail(Code::INVALID_ARGUMENT, "model '" + m.name + "' is configured twice");
    if (m.base_path.empty()) fail(Code::INVALID_ARGUMENT, "model '" + m.name + "' has an empty base_path");
    if (m.policy.kind == VersionPolicy::Kind::Latest && m.policy.num_versions < 1)
      fail(Code::INVALID_ARGUMENT, "model '" + m.name + "': latest.num_versions must be at least 1");
    if (m.policy.kind == VersionPolicy::Kind::Specific) {
      if (m.policy.versions.empty())
        fail(Code::INVALID_ARGUMENT, "model '" + m.name + "': a specific version policy needs at least one version");
      for (int64_t v : m.policy.versions)
        if (v < 1)
          fail(Code::INVALID_ARGUMENT,
               "model '" + m.name + "': specific version " + std::to_string(v) + " is not a positive integer");
    }
    for (const auto& [label, version] : m.labels) {
      if (!valid_label(label))
        fail(Code::INVALID_ARGUMENT, "model '" + m.name + "': version label '" + label +
                                         "' must be letters, digits and underscores");
      if (version < 1)
        fail(Code::INVALID_ARGUMENT, "model '" + m.name + "': label '" + label + "' names version " +
                                         std::to_string(version) + ", which is not a positive integer");
    }
  }
}

const char* state_name(State state) {
  switch (state) {
    case State::Unknown: return "UNKNOWN";
    case State::Start: return "START";
    case State::Loading: return "LOADING";
    case State::Available: return "AVAILABLE";
    case State::Unloading: return "UNLOADING";
    case State::End: return "END";
  }
  return "UNKNOWN";
}

// Version statuses. A loaded servable marks its version END when it is freed, unless the version
// was loaded again since (each load has its own generation).
struct ModelManager::Board {
  struct Entry {
    VersionStatus status;
    uint64_t generation = 0;
  };
  std::mutex mu;
  std::map<std::string, std::map<int64_t, Entry>> versions;
  uint64_t next_generation = 1;

  // A load starts a new generation (returned); later states of that load keep it.
  uint64_t set(const std::string& model, int64_t version, State state, Status status = {}) {
    std::lock_guard<std::mutex> lock(mu);
    Entry& e = versions[model][version];
    e.status = VersionStatus{version, state, std::move(status)};
    if (state == State::Loading) e.generation = next_generation++;
    return e.generation;
  }
  // Marks END if `generation` is still the version's latest.
  bool end_if(const std::string& model, int64_t version, uint64_t generation) {
    std::lock_guard<std::mutex> lock(mu);
    auto m = versions.find(model);
    if (m == versions.end()) return false;
    auto v = m->second.find(version);
    if (v == m->second.end() || v->second.generation != generation) return false;
    v->second.status = VersionStatus{version, State::End, {}};
    return true;
  }
  void forget(const std::string& model) {
    std::lock_guard<std::mutex> lock(mu);
    versions.erase(model);
  }
};

ModelManager::ModelManager(ManagerOptions options, ManagerEventListener listener)
    : options_(std::move(options)), listener_(std::move(listener)), board_(std::make_shared<Board>()) {}

ModelManager::~ModelManager() { stop_polling(); }

namespace {

// What a version directory looks like now: every file's relative path, size and modification time.
// A failed version is tried again when this changes.
std::string fingerprint(const fs::path& dir) {
  std::vector<std::string> entries;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (::stat(it->path().c_str(), &st) != 0) continue;
    entries.push_back(fs::relative(it->path(), dir, ec).string() + ":" + std::to_string(st.st_size) + ":" +
                      std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec));
  }
  std::sort(entries.begin(), entries.end());
  std::string out = ec ? "error:" + ec.message() : "";
  for (const auto& e : entries) out += e + "\n";
  return out;
}

}  // namespace

void ModelManager::install(const ServerConfig& config, bool drop) {
  std::vector<std::pair<std::string, std::vector<ServableHandle>>> dropped;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    for (auto it = models_.begin(); it != models_.end();) {
      const bool kept = std::any_of(config.begin(), config.end(), [&](const ModelSource& m) { return m.name == it->first; });
      if (kept || !drop) {
        ++it;
        continue;
      }
      std::vector<ServableHandle> handles;
      for (auto& [v, h] : it->second.available) handles.push_back(std::move(h));
      dropped.emplace_back(it->first, std::move(handles));
      it = models_.erase(it);
    }
    for (const ModelSource& m : config) {
      ModelState& s = models_[m.name];
      if (s.source.base_path != m.base_path) s.failed.clear();
      s.source = m;
    }
    config_ = config;
  }
  for (auto& [name, handles] : dropped) {
    log_info("model '" + name + "' is no longer configured; unloading its " + std::to_string(handles.size()) +
             " version(s) after their last requests");
    board_->forget(name);
  }
}

Status ModelManager::check_labels(const ServerConfig& config) const {
  if (options_.allow_labels_for_unavailable) return {};
  std::lock_guard<std::mutex> lock(state_mu_);
  for (const ModelSource& m : config) {
    const ModelState& s = models_.at(m.name);
    for (const auto& [label, version] : m.labels) {
      auto old = s.labels.find(label);
      const bool unchanged = old != s.labels.end() && old->second == version;
      if (!unchanged && !s.available.count(version))
        return {Code::FAILED_PRECONDITION, "Request to assign label to version " + std::to_string(version) +
                                               " of model " + m.name +
                                               ", which is not currently available for inference"};
    }
  }
  return {};
}

Status ModelManager::reload(const ServerConfig& config) {
  try {
    validate_config(config);
  } catch (const RequestError& e) {
    return e.status();
  }
  std::lock_guard<std::mutex> lifecycle(lifecycle_mu_);
  const ServerConfig previous = config_;
  // First load what the new config wants while everything still serves as before (no model
  // dropped, no version unloaded, the old labels in place); then decide its labels against what
  // is available. A refused config leaves nothing changed but the extra versions, unloaded again.
  install(config, /*drop=*/false);
  poll_locked(/*unload=*/false);
  Status labels = check_labels(config);
  if (!labels.ok()) {
    install(previous, /*drop=*/true);
    poll_locked();
    return labels;
  }
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    for (const ModelSource& m : config) {
      ModelState& s = models_.at(m.name);
      if (s.labels != m.labels) {
        std::string text;
        for (const auto& [l, v] : m.labels) text += (text.empty() ? "" : ", ") + l + " -> " + std::to_string(v);
        log_info("model '" + m.name + "': labels " + (text.empty() ? "none" : text));
      }
      s.labels = m.labels;
    }
  }
  install(config, /*drop=*/true);
  poll_locked();
  return {};
}

void ModelManager::poll() {
  std::lock_guard<std::mutex> lifecycle(lifecycle_mu_);
  poll_locked();
}

void ModelManager::poll_locked(bool unload) {
  std::vector<std::string> names;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    for (const auto& [name, s] : models_) names.push_back(name);
  }
  for (const auto& name : names) poll_model(name, unload);
}

void ModelManager::poll_model(const std::string& name, bool unload) {
  ModelSource source;
  std::set<int64_t> loaded;
  std::map<int64_t, std::string> failed;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    const ModelState& s = models_.at(name);
    source = s.source;
    for (const auto& [v, h] : s.available) loaded.insert(v);
    failed = s.failed;
  }
  auto log_once = [&](const std::string& key, const std::string& line, bool error) {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (models_.at(name).logged.insert(key).second) (error ? log_error(line) : log_info(line));
  };

  std::vector<int64_t> present;
  std::error_code ec;
  const bool exists = fs::is_directory(source.base_path, ec);
  if (exists) {
    try {
      present = list_versions(source.base_path);
    } catch (const Error& e) {
      log_once(std::string("list:") + e.what(), "model '" + name + "': " + e.what(), true);
    }
  } else {
    log_once("missing:" + source.base_path,
             "model '" + name + "': base path '" + source.base_path + "' does not exist (polling for it)", true);
  }
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    models_.at(name).base_path_missing = !exists;
  }
  const std::vector<int64_t> aspired = aspired_versions(source.policy, present);
  if (exists && present.empty())
    log_once("empty:" + source.base_path,
             "model '" + name + "': no versions found under '" + source.base_path + "' (polling for them)", false);

  // Load the aspired versions that are not loaded yet, newest first.
  for (auto it = aspired.rbegin(); it != aspired.rend(); ++it) {
    const int64_t v = *it;
    if (loaded.count(v)) continue;
    const fs::path dir = fs::path(source.base_path) / std::to_string(v);
    const std::string fp = fingerprint(dir);
    auto f = failed.find(v);
    if (f != failed.end() && f->second == fp) continue;  // unchanged since it failed
    const uint64_t generation = board_->set(name, v, State::Loading);
    log_info("model '" + name + "' version " + std::to_string(v) + ": LOADING from " + dir.string());
    ServableHandle handle;
    Status error;
    try {
      std::weak_ptr<Board> board = board_;
      handle = Servable::load(name, v, dir.string(), options_.servable, [board, name, v, generation] {
        auto b = board.lock();
        if (b && b->end_if(name, v, generation))
          log_info("model '" + name + "' version " + std::to_string(v) + ": END (unloaded after its last request)");
      });
      board_->set(name, v, State::Available);
    } catch (...) {
      error = current_exception_status();
    }
    if (handle) {
      log_info("model '" + name + "' version " + std::to_string(v) + ": AVAILABLE (loaded and warmed up in " +
               std::to_string(static_cast<int64_t>(handle->load_seconds() * 1000)) + " ms; " +
               std::to_string(handle->replicas()) + (handle->replicas() == 1 ? " replica)" : " replicas)"));
      if (listener_) listener_(name, v, "load", true, handle->load_seconds());
      std::lock_guard<std::mutex> lock(state_mu_);
      ModelState& s = models_.at(name);
      s.available[v] = handle;
      s.failed.erase(v);
      loaded.insert(v);
    } else {
      board_->set(name, v, State::End, error);
      log_error("model '" + name + "' version " + std::to_string(v) + ": END, failed to load: " + error.message);
      if (listener_) listener_(name, v, "load", false, 0);
      std::lock_guard<std::mutex> lock(state_mu_);
      models_.at(name).failed[v] = fp;
    }
  }

  if (!unload) return;
  // Unload what is no longer aspired, but only once an aspired version serves.
  const bool aspired_serves = std::any_of(aspired.begin(), aspired.end(), [&](int64_t v) { return loaded.count(v) > 0; });
  std::vector<ServableHandle> unloading;
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    ModelState& s = models_.at(name);
    for (auto it = s.available.begin(); it != s.available.end();) {
      const bool wanted = std::find(aspired.begin(), aspired.end(), it->first) != aspired.end();
      if (wanted || !aspired_serves) {
        if (!wanted && s.logged.insert("keep:" + std::to_string(it->first)).second)
          log_info("model '" + name + "' version " + std::to_string(it->first) +
                   ": kept AVAILABLE although the policy (" + source.policy.str() +
                   ") no longer wants it, since no wanted version is available");
        ++it;
        continue;
      }
      s.logged.erase("keep:" + std::to_string(it->first));
      unloading.push_back(std::move(it->second));
      it = s.available.erase(it);
    }
  }
  for (auto& h : unloading) {
    const int64_t v = h->version();
    board_->set(name, v, State::Unloading);
    log_info("model '" + name + "' version " + std::to_string(v) + ": UNLOADING (after its last request)");
    if (listener_) listener_(name, v, "unload", true, 0);
    h.reset();  // freed here, or by the last request that still holds it
  }
}

void ModelManager::start_polling(double seconds) {
  poller_ = std::make_unique<PeriodicThread>(seconds, [this] {
    try {
      poll();
    } catch (const std::exception& e) {
      log_error(std::string("poll failed: ") + e.what());
    }
  });
}

void ModelManager::stop_polling() { poller_.reset(); }

ServableHandle ModelManager::resolve(const std::string& model, std::optional<int64_t> version,
                                     const std::string& label) const {
  std::lock_guard<std::mutex> lock(state_mu_);
  auto m = models_.find(model);
  if (!label.empty()) {
    if (m == models_.end()) fail(Code::NOT_FOUND, "Servable not found for request: Latest(" + model + ")");
    auto l = m->second.labels.find(label);
    if (l == m->second.labels.end()) fail(Code::INVALID_ARGUMENT, "Unrecognized servable version label: " + label);
    version = l->second;
  }
  if (m == models_.end() || m->second.available.empty())
    fail(Code::NOT_FOUND, version ? "Servable not found for request: Specific(" + model + ", " +
                                        std::to_string(*version) + ")"
                                  : "Servable not found for request: Latest(" + model + ")");
  const auto& avail = m->second.available;
  if (!version) return avail.rbegin()->second;
  auto v = avail.find(*version);
  if (v == avail.end())
    fail(Code::NOT_FOUND, "Servable not found for request: Specific(" + model + ", " + std::to_string(*version) + ")");
  return v->second;
}

std::vector<VersionStatus> ModelManager::status(const std::string& model, std::optional<int64_t> version) const {
  {
    std::lock_guard<std::mutex> lock(state_mu_);
    if (!models_.count(model)) fail(Code::NOT_FOUND, "Could not find any versions of model " + model);
  }
  std::vector<VersionStatus> out;
  {
    std::lock_guard<std::mutex> lock(board_->mu);
    auto m = board_->versions.find(model);
    if (m != board_->versions.end())
      for (const auto& [v, e] : m->second)
        if (!version || v == *version) out.push_back(e.status);
  }
  if (out.empty())
    fail(Code::NOT_FOUND, version ? "Could not find version " + std::to_string(*version) + " of model " + model
                                  : "Could not find any versions of model " + model);
  return out;
}

std::vector<std::string> ModelManager::model_names() const {
  std::lock_guard<std::mutex> lock(state_mu_);
  std::vector<std::string> out;
  for (const auto& [name, s] : models_) out.push_back(name);
  return out;
}

bool ModelManager::ready() const {
  std::lock_guard<std::mutex> lock(state_mu_);
  return std::all_of(models_.begin(), models_.end(), [](const auto& m) { return !m.second.available.empty(); });
}

std::string ModelManager::startup_problem() const {
  std::lock_guard<std::mutex> lock(state_mu_);
  for (const auto& [name, s] : models_) {
    if (!s.available.empty()) continue;
    if (s.base_path_missing)
      return "model '" + name + "': base path '" + s.source.base_path + "' does not exist or is not a directory";
    if (!s.failed.empty()) {
      std::lock_guard<std::mutex> board(board_->mu);
      const auto& versions = board_->versions[name];
      std::string why;
      for (const auto& [v, fp] : s.failed) {
        auto e = versions.find(v);
        why += "\n  version " + std::to_string(v) + ": " + (e != versions.end() ? e->second.status.status.message : "");
      }
      return "model '" + name + "': no version could be loaded:" + why;
    }
  }
  return "";
}

}  // namespace tandem::serve
