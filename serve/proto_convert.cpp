#include "serve/proto_convert.h"

#include <google/protobuf/util/json_util.h>

#include "serve/status.h"

namespace tandem::serve {

tensorflow::serving::SignatureDefMap signature_def_map(const Servable& servable) {
  tensorflow::serving::SignatureDefMap map;
  tensorflow::SignatureDef& sig = (*map.mutable_signature_def())[kDefaultSignature];
  sig.set_method_name(kPredictMethod);
  tensorflow::TensorInfo& in = (*sig.mutable_inputs())[kInputName];
  in.set_name(std::string(kInputName) + ":0");
  in.set_dtype(tensorflow::DT_FLOAT);
  in.mutable_tensor_shape()->add_dim()->set_size(-1);
  for (int64_t d : servable.input_shape().dims) in.mutable_tensor_shape()->add_dim()->set_size(d);
  tensorflow::TensorInfo& out = (*sig.mutable_outputs())[kOutputName];
  out.set_name(std::string(kOutputName) + ":0");
  out.set_dtype(tensorflow::DT_FLOAT);
  out.mutable_tensor_shape()->add_dim()->set_size(-1);
  out.mutable_tensor_shape()->add_dim()->set_size(servable.num_classes());
  return map;
}

tensorflow::serving::GetModelStatusResponse status_response(const std::vector<VersionStatus>& versions) {
  tensorflow::serving::GetModelStatusResponse r;
  for (const VersionStatus& v : versions) {
    auto* s = r.add_model_version_status();
    s->set_version(v.version);
    s->set_state(static_cast<tensorflow::serving::ModelVersionStatus::State>(static_cast<int>(v.state)));
    s->mutable_status()->set_error_code(static_cast<tensorflow::error::Code>(static_cast<int>(v.status.code)));
    s->mutable_status()->set_error_message(v.status.message);
  }
  return r;
}

std::string proto_to_json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(message, &out, options).ok())
    fail(Code::INTERNAL, "cannot print " + message.GetTypeName() + " as JSON");
  return out;
}

}  // namespace tandem::serve
