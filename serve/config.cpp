#include "serve/config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "engine/errors.h"
#include "tensorflow_serving/config/model_server_config.pb.h"
#include "tensorflow_serving/config/monitoring_config.pb.h"

namespace tandem::serve {
namespace {

class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (text.empty()) text = std::to_string(line + 1) + ":" + std::to_string(column + 1) + ": " + message;
  }
  std::string text;
};

template <typename Proto>
Proto parse_text(const std::string& path, const char* what, const char* hint) {
  Proto proto;
  parse_text_proto(path, what, hint, &proto);
  return proto;
}

}  // namespace

void parse_text_proto(const std::string& path, const std::string& what, const std::string& hint,
                      google::protobuf::Message* proto) {
  const std::string text = read_config_text(path);
  google::protobuf::TextFormat::Parser parser;
  FirstError errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, proto))
    throw_data(path + ":" + (errors.text.empty() ? std::string("1:1: does not parse") : errors.text) + " (in a " +
                   what + ")",
               hint);
}

std::string read_config_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_io("cannot read '" + path + "': " + std::strerror(errno), "check the path and its permissions");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

ServerConfig config_from_proto(const tensorflow::serving::ModelServerConfig& proto) {
  if (!proto.has_model_config_list())
    fail(Code::INVALID_ARGUMENT, "the config has no model_config_list (custom_model_config is not supported)");
  ServerConfig out;
  for (const auto& c : proto.model_config_list().config()) {
    ModelSource m;
    m.name = c.name();
    m.base_path = c.base_path();
    if (!c.model_platform().empty() && c.model_platform() != "tensorflow" && c.model_platform() != "tandem")
      fail(Code::INVALID_ARGUMENT, "model '" + m.name + "': model_platform \"" + c.model_platform() +
                                       "\" is not served here (\"tensorflow\" or \"tandem\")");
    const auto& p = c.model_version_policy();
    using P = tensorflow::serving::FileSystemStoragePathSourceConfig::ServableVersionPolicy;
    switch (p.policy_choice_case()) {
      case P::kAll: m.policy.kind = VersionPolicy::Kind::All; break;
      case P::kSpecific:
        m.policy.kind = VersionPolicy::Kind::Specific;
        m.policy.versions.assign(p.specific().versions().begin(), p.specific().versions().end());
        break;
      case P::kLatest:
        m.policy.kind = VersionPolicy::Kind::Latest;
        m.policy.num_versions = p.latest().num_versions() == 0 ? 1 : p.latest().num_versions();
        break;
      default: break;  // latest 1
    }
    for (const auto& [label, version] : c.version_labels()) m.labels[label] = version;
    out.push_back(std::move(m));
  }
  validate_config(out);
  return out;
}

ServerConfig read_model_config_file(const std::string& path) {
  const auto proto = parse_text<tensorflow::serving::ModelServerConfig>(
      path, "ModelServerConfig",
      "expected text format: model_config_list { config { name: \"m\" base_path: \"/models/m\" } }");
  try {
    return config_from_proto(proto);
  } catch (const RequestError& e) {
    throw_invalid(path + ": " + e.what());
  }
}

MonitoringOptions read_monitoring_config_file(const std::string& path) {
  const auto proto = parse_text<tensorflow::serving::MonitoringConfig>(
      path, "MonitoringConfig", "expected text format: prometheus_config { enable: true path: \"/metrics\" }");
  MonitoringOptions m;
  m.prometheus = proto.prometheus_config().enable();
  if (!proto.prometheus_config().path().empty()) m.path = proto.prometheus_config().path();
  if (m.path.empty() || m.path[0] != '/')
    throw_invalid(path + ": prometheus_config.path must start with '/', got \"" + m.path + "\"");
  return m;
}

}  // namespace tandem::serve
