// Tandem's serving state as TF Serving's protos: a servable's SignatureDefMap (GetModelMetadata),
// version statuses (GetModelStatus), and the JSON printing TF Serving's REST API uses for them.
#pragma once
#include <string>
#include <vector>

#include "serve/model_manager.h"
#include "serve/servable.h"
#include "tensorflow_serving/apis/get_model_metadata.pb.h"
#include "tensorflow_serving/apis/get_model_status.pb.h"

namespace tandem::serve {

// serving_default: input "input" float32 [-1, H, W, C] (tensor "input:0"), output "probabilities"
// float32 [-1, classes], method tensorflow/serving/predict — as the SavedModel export writes it.
tensorflow::serving::SignatureDefMap signature_def_map(const Servable& servable);
tensorflow::serving::GetModelStatusResponse status_response(const std::vector<VersionStatus>& versions);
// Proto -> JSON with proto field names and default values printed (TF Serving's REST output).
std::string proto_to_json(const google::protobuf::Message& message);

}  // namespace tandem::serve
