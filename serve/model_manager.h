// The model manager: which versions of which models are served, and their lifecycle.
//
// For each configured model a source polls its base path (numeric directories are versions), the
// version policy picks the aspired versions, and each aspired version is loaded, verified and
// warmed up before it becomes AVAILABLE. Swaps preserve availability: a version is unloaded only
// once an aspired version is AVAILABLE, and a model that had an available version never has none.
// A version that fails to load is in state END with the error; it is tried again only when its
// directory changes (a half-copied version loads once its copy completes), and its error is logged
// once. Requests hold a ServableHandle, so a version is freed after its last request.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "serve/periodic.h"
#include "serve/servable.h"
#include "serve/status.h"

namespace tandem::serve {

struct VersionPolicy {
  enum class Kind { Latest, All, Specific };
  Kind kind = Kind::Latest;
  int64_t num_versions = 1;       // Latest
  std::vector<int64_t> versions;  // Specific
  std::string str() const;        // "latest 1", "all", "specific {1, 3}"
};

// The versions `policy` aspires to among `present` (ascending), ascending.
std::vector<int64_t> aspired_versions(const VersionPolicy& policy, const std::vector<int64_t>& present);

struct ModelSource {
  std::string name, base_path;
  VersionPolicy policy;
  std::map<std::string, int64_t> labels;
};
using ServerConfig = std::vector<ModelSource>;

// Checks names (unique, non-empty), base paths, policies and label names; throws RequestError
// (INVALID_ARGUMENT) naming the model and the field.
void validate_config(const ServerConfig& config);

enum class State { Unknown = 0, Start = 10, Loading = 20, Available = 30, Unloading = 40, End = 50 };
const char* state_name(State state);  // "AVAILABLE"

struct VersionStatus {
  int64_t version = 0;
  State state = State::Unknown;
  Status status;
};

struct ManagerOptions {
  ServableOptions servable;
  bool allow_labels_for_unavailable = false;  // --allow_version_labels_for_unavailable_models
};

// Load and unload events, for metrics: event is "load" (ok says whether it succeeded) or "unload".
using ManagerEventListener = std::function<void(const std::string& model, int64_t version, const char* event, bool ok,
                                                double seconds)>;

class ModelManager {
 public:
  explicit ModelManager(ManagerOptions options, ManagerEventListener listener = nullptr);
  ~ModelManager();
  ModelManager(const ModelManager&) = delete;
  ModelManager& operator=(const ModelManager&) = delete;

  // Installs `config` (models absent from it are unloaded), loads what its policies aspire and
  // moves the labels. An invalid config, or a label on a version that is not available, leaves the
  // previous config in force and returns the error.
  Status reload(const ServerConfig& config);
  // One pass over every model's base path.
  void poll();
  // Polls every `seconds` on a thread of its own until stop_polling() or destruction.
  void start_polling(double seconds);
  void stop_polling();

  // The handle that serves a request for `model` at `version` or `label` (neither: the newest
  // available version). Throws RequestError with TF Serving's codes and messages.
  ServableHandle resolve(const std::string& model, std::optional<int64_t> version, const std::string& label) const;
  // Every version's status, ascending (`version`: just that one). Throws NOT_FOUND.
  std::vector<VersionStatus> status(const std::string& model, std::optional<int64_t> version = std::nullopt) const;
  std::vector<std::string> model_names() const;
  bool ready() const;  // every model has an available version
  // After the first reload: why the server cannot start (a base path that does not exist, or
  // versions of which none loaded), or "" if it can.
  std::string startup_problem() const;

 private:
  struct Board;  // version statuses, shared with the servables (which mark END when freed)
  struct ModelState {
    ModelSource source;
    std::map<int64_t, ServableHandle> available;
    std::map<int64_t, std::string> failed;  // version -> directory fingerprint when its load failed
    std::map<std::string, int64_t> labels;
    bool base_path_missing = false;
    std::set<std::string> logged;  // one-time messages already logged
  };
  // Sets the sources (policies, paths) of the configured models; with `drop`, also forgets the
  // models the config no longer has (their versions unload after their last requests).
  void install(const ServerConfig& config, bool drop);
  // Loads what the policies want; with `unload`, also unloads what they no longer want.
  void poll_locked(bool unload = true);
  void poll_model(const std::string& name, bool unload);
  Status check_labels(const ServerConfig& config) const;

  ManagerOptions options_;
  ManagerEventListener listener_;
  std::shared_ptr<Board> board_;
  std::mutex lifecycle_mu_;  // one poll or reload at a time
  mutable std::mutex state_mu_;  // models_ (held briefly; never while loading)
  std::map<std::string, ModelState> models_;
  ServerConfig config_;
  std::unique_ptr<PeriodicThread> poller_;
};

}  // namespace tandem::serve
