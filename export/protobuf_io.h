// Protobuf messages in and out of files, for the SavedModel and ONNX writers and readers.
//
// Why libprotobuf (classes generated from the subsets in proto/) rather than wire-format code of our
// own: it is a well-kept library that real SavedModel and ONNX files from any producer parse with,
// the server needs it anyway, and the .proto files document the formats by field name. Determinism
// is asked for explicitly: fields come out in field-number order and maps in sorted key order, so
// the same model always exports to the same bytes.
#pragma once
#include <string>

namespace google::protobuf {
class MessageLite;
}

namespace tandem {

// The message's bytes, deterministically (map entries sorted by key).
std::string deterministic_bytes(const google::protobuf::MessageLite& message);

// Parses `data` into `message`. Throws Error(Data) naming `where` with `hint` when the bytes are not
// such a message: truncated, malformed, or (proto3) a string field holding invalid UTF-8. Without a
// log line from libprotobuf: the error says it. What the message holds is still the caller's to check.
void parse_message(google::protobuf::MessageLite& message, const std::string& data, const std::string& where,
                   const std::string& hint);

}  // namespace tandem
