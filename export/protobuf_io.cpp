#include "export/protobuf_io.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/message_lite.h>
#include <google/protobuf/stubs/logging.h>

#include "engine/errors.h"

namespace tandem {

std::string deterministic_bytes(const google::protobuf::MessageLite& message) {
  std::string out;
  bool ok = false;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    ok = message.SerializeToCodedStream(&coded);
  }
  if (!ok)  // the one way it fails: a message over protobuf's 2 GiB limit
    throw_invalid("the " + message.GetTypeName() + " would be " + std::to_string(message.ByteSizeLong()) +
                      " bytes, over protobuf's 2 GiB limit",
                  "a SavedModel or an ONNX model is one protobuf message; --format tfjs shards its weights");
  return out;
}

void parse_message(google::protobuf::MessageLite& message, const std::string& data, const std::string& where,
                   const std::string& hint) {
  bool ok = false;
  {
    google::protobuf::LogSilencer quiet;  // its "invalid UTF-8" line would precede our error
    ok = message.ParseFromString(data);
  }
  if (!ok)
    throw_data(where + ": not a valid " + message.GetTypeName() + " (" + std::to_string(data.size()) +
                   " bytes): truncated, malformed, or a string that is not UTF-8",
               hint);
}

}  // namespace tandem
