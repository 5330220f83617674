#include "dist/launch_env.h"

#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>

#include "engine/errors.h"

namespace tandem {
namespace {

const char* const kTfHint =
    "TF_CONFIG is JSON like {\"cluster\": {\"chief\": [\"host0:2222\"], \"worker\": [\"host1:2222\"]}, "
    "\"task\": {\"type\": \"worker\", \"index\": 0}}";

[[noreturn]] void bad_tf(const std::string& what) { throw_invalid("TF_CONFIG: " + what, kTfHint); }

// "host:port" or "[v6]:port" -> host, port (1..65535).
std::pair<std::string, int> split_address(const std::string& address, const std::string& field) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    bad_tf(field + " is '" + address + "', not host:port");
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = address.substr(colon + 1);
  long p = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || p > 65535) bad_tf(field + " has port '" + port + "', not a number in 1..65535");
    p = p * 10 + (c - '0');
  }
  if (p < 1 || p > 65535) bad_tf(field + " has port '" + port + "', not a number in 1..65535");
  if (host.empty()) bad_tf(field + " is '" + address + "', with no host");
  return {host, static_cast<int>(p)};
}

long parse_count(const char* name, const char* value, long lo, long hi, const std::string& range) {
  const std::string v = value;
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n < lo || n > hi)
    throw_invalid(std::string(name) + "='" + v + "' is not " + range,
                  "torchrun sets MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE for every worker");
  return n;
}

}  // namespace

LaunchEnv parse_tf_config(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    bad_tf(std::string("not JSON (") + e.what() + ")");
  }
  if (!j.is_object()) bad_tf("must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "cluster" && it.key() != "task" && it.key() != "environment" && it.key() != "rpc_layer")
      bad_tf("unknown key '" + it.key() + "'");
  if (!j.contains("cluster")) bad_tf("the key 'cluster' is missing");
  if (!j.contains("task")) bad_tf("the key 'task' is missing");
  const auto& cluster = j["cluster"];
  const auto& task = j["task"];
  if (!cluster.is_object()) bad_tf("'cluster' must be an object of job names to address lists");
  if (!task.is_object()) bad_tf("'task' must be an object with 'type' and 'index'");

  for (auto it = cluster.begin(); it != cluster.end(); ++it) {
    const std::string& job = it.key();
    if (job == "ps")
      throw_invalid("TF_CONFIG: cluster.ps lists parameter servers; Tandem has none",
                    "multi-worker training all-reduces gradients between workers: list only 'chief' and 'worker'");
    if (job == "evaluator")
      throw_invalid("TF_CONFIG: cluster.evaluator is not supported; Tandem evaluates on the chief during training",
                    "drop the evaluator job and run `tandem evaluate` on the saved model instead");
    if (job != "chief" && job != "worker")
      bad_tf("unknown job 'cluster." + job + "' (Tandem runs 'chief' and 'worker')");
    if (!it->is_array()) bad_tf("cluster." + job + " must be a list of \"host:port\" strings");
  }
  const nlohmann::json none = nlohmann::json::array();
  const auto& chief = cluster.contains("chief") ? cluster["chief"] : none;
  const auto& worker = cluster.contains("worker") ? cluster["worker"] : none;
  if (chief.size() > 1) bad_tf("cluster.chief lists " + std::to_string(chief.size()) + " tasks; there is one chief");
  if (chief.empty() && worker.empty()) bad_tf("cluster lists no 'chief' and no 'worker'");

  LaunchEnv env;
  env.source = "TF_CONFIG";
  std::map<std::string, std::string> seen;  // address -> field
  std::vector<std::pair<std::string, int>> addresses;
  auto add = [&](const nlohmann::json& list, const std::string& job) {
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string field = "cluster." + job + "[" + std::to_string(i) + "]";
      if (!list[i].is_string()) bad_tf(field + " must be a \"host:port\" string");
      const std::string a = list[i].get<std::string>();
      addresses.push_back(split_address(a, field));
      auto [at, fresh] = seen.emplace(a, field);
      if (!fresh) bad_tf(field + " repeats the address '" + a + "' of " + at->second + "; each task needs its own");
      env.names.push_back(job + " " + std::to_string(i) + " (" + a + ")");
    }
  };
  add(chief, "chief");
  add(worker, "worker");

  if (!task.contains("type")) bad_tf("the key 'task.type' is missing");
  if (!task.contains("index")) bad_tf("the key 'task.index' is missing");
  if (!task["type"].is_string()) bad_tf("task.type must be a string: \"chief\" or \"worker\"");
  const std::string type = task["type"].get<std::string>();
  if (type == "ps" || type == "evaluator")
    throw_invalid("TF_CONFIG: task.type '" + type + "' is not supported; Tandem has no parameter servers or evaluators",
                  "start only the chief and the workers");
  if (type != "chief" && type != "worker") bad_tf("task.type is '" + type + "'; it must be \"chief\" or \"worker\"");
  if (!task["index"].is_number_integer()) bad_tf("task.index must be an integer");
  const long index = task["index"].get<long>();
  const auto& list = type == "chief" ? chief : worker;
  if (index < 0 || index >= static_cast<long>(list.size()))
    bad_tf("task.index " + std::to_string(index) + " is out of range: cluster." + type + " lists " +
           std::to_string(list.size()) + " task(s)");
  env.rank = static_cast<int>(type == "chief" ? 0 : static_cast<long>(chief.size()) + index);
  env.size = static_cast<int>(addresses.size());
  env.rendezvous_host = addresses[0].first;
  env.rendezvous_port = addresses[0].second;
  env.cluster = nlohmann::json{{"chief", chief}, {"worker", worker}}.dump();
  return env;
}

bool torchrun_env_present(const std::function<const char*(const char*)>& get) {
  for (const char* v : {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"})
    if (get(v)) return true;
  return false;
}

LaunchEnv parse_torchrun_env(const std::function<const char*(const char*)>& get) {
  for (const char* v : {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"})
    if (!get(v))
      throw_invalid(std::string(v) + " is not set, but other torchrun variables are",
                    "set MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE for every worker (torchrun does)");
  LaunchEnv env;
  env.source = "torchrun";
  env.size = static_cast<int>(parse_count("WORLD_SIZE", get("WORLD_SIZE"), 1, 65536, "a number of workers (1..65536)"));
  env.rank = static_cast<int>(
      parse_count("RANK", get("RANK"), 0, env.size - 1, "a rank below WORLD_SIZE=" + std::to_string(env.size)));
  env.rendezvous_port = static_cast<int>(parse_count("MASTER_PORT", get("MASTER_PORT"), 1, 65535, "a port (1..65535)"));
  env.rendezvous_host = get("MASTER_ADDR");
  if (env.rendezvous_host.empty()) throw_invalid("MASTER_ADDR is empty", "set it to rank 0's host name or address");
  if (const char* local = get("LOCAL_RANK"))
    parse_count("LOCAL_RANK", local, 0, env.size - 1, "a rank below WORLD_SIZE");
  env.cluster = "WORLD_SIZE=" + std::to_string(env.size) + " MASTER_ADDR=" + env.rendezvous_host +
                " MASTER_PORT=" + std::to_string(env.rendezvous_port);
  for (int r = 0; r < env.size; ++r) env.names.push_back("RANK " + std::to_string(r));
  return env;
}

std::optional<LaunchEnv> launch_env_from_environment(std::string* note) {
  auto get = [](const char* name) -> const char* { return std::getenv(name); };
  const char* tf = std::getenv("TF_CONFIG");
  if (tf && *tf) {
    if (note && torchrun_env_present(get)) *note = "TF_CONFIG is set: it is used, and torchrun's variables are ignored";
    return parse_tf_config(tf);
  }
  if (torchrun_env_present(get)) return parse_torchrun_env(get);
  return std::nullopt;
}

}  // namespace tandem
