// The server's text-format configuration files, parsed with libprotobuf's TextFormat from our
// .proto subsets (proto/): --model_config_file (ModelServerConfig) and --monitoring_config_file
// (MonitoringConfig). Errors name the file and line.
#pragma once
#include <string>

#include "serve/model_manager.h"

namespace google::protobuf {
class Message;
}
namespace tensorflow::serving {
class ModelServerConfig;
}

namespace tandem::serve {

// Throws Error(Io) if the file cannot be read, Error(Data) "FILE:LINE:COL: message" if it does not
// parse, and Error(InvalidArgument) if it parses but is not a valid configuration.
ServerConfig read_model_config_file(const std::string& path);
// The contents of a ModelServerConfig; throws RequestError(INVALID_ARGUMENT).
ServerConfig config_from_proto(const tensorflow::serving::ModelServerConfig& proto);

struct MonitoringOptions {
  bool prometheus = false;
  std::string path = "/monitoring/prometheus/metrics";
};
MonitoringOptions read_monitoring_config_file(const std::string& path);

// Parses a text-format proto file into `proto`; throws Error(Io), or Error(Data) with
// "FILE:LINE:COL: message (in a WHAT)" and `hint`.
void parse_text_proto(const std::string& path, const std::string& what, const std::string& hint,
                      google::protobuf::Message* proto);

// Reads a whole file; throws Error(Io) naming it.
std::string read_config_text(const std::string& path);

}  // namespace tandem::serve
