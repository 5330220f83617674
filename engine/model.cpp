#include "engine/model.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "engine/errors.h"
#include "engine/rng.h"

namespace tandem {

using nlohmann::json;

namespace {
constexpr size_t kAlignFloats = 16;  // 64-byte aligned tensors inside the arena
size_t align_up(size_t n) { return (n + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v), out;
  int count = 0;
  for (auto it = s.rbegin(); it != s.rend(); ++it) {
    if (count && count % 3 == 0) out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    ++count;
  }
  return out;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB"};
  int u = 0;
  while (bytes >= 1024 && u < 3) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f %s", bytes, units[u]);
  return buf;
}
}  // namespace

Model Model::from_spec(const json& spec, const std::string& source) {
  if (!spec.is_object()) throw_invalid(source + ": a model spec must be a JSON object");
  for (auto it = spec.begin(); it != spec.end(); ++it)
    if (it.key() != "name" && it.key() != "input_shape" && it.key() != "layers")
      throw_invalid(source + ": unknown top-level field \"" + it.key() + "\"",
                    "a model spec has \"name\", \"input_shape\" and \"layers\"");
  Model m;
  m.name_ = "model";
  if (spec.contains("name")) {
    if (!spec["name"].is_string() || spec["name"].get<std::string>().empty())
      throw_invalid(source + ": \"name\" must be a non-empty string");
    m.name_ = spec["name"].get<std::string>();
  }
  if (!spec.contains("input_shape"))
    throw_invalid(source + ": missing field \"input_shape\"", "write e.g. \"input_shape\": [28, 28, 1]");
  const json& is = spec["input_shape"];
  if (!is.is_array() || is.empty() || is.size() > 3)
    throw_invalid(source + ": \"input_shape\" must be a list of 1 to 3 positive integers, got " + is.dump());
  for (const json& d : is) {
    if (!d.is_number_integer() || d.get<int64_t>() <= 0 || d.get<int64_t>() > (1 << 20))
      throw_invalid(source + ": \"input_shape\" must be a list of positive integers, got " + is.dump());
    m.input_shape_.dims.push_back(d.get<int64_t>());
  }
  if (!spec.contains("layers") || !spec["layers"].is_array() || spec["layers"].empty())
    throw_invalid(source + ": \"layers\" must be a non-empty list of layers");

  std::map<std::string, int> counters;
  std::set<std::string> names;
  Shape shape = m.input_shape_;
  const json& layers = spec["layers"];
  for (size_t i = 0; i < layers.size(); ++i) {
    auto layer = make_layer(layers[i], source + ": layers[" + std::to_string(i) + "]");
    if (layer->name().empty()) {
      std::string stem = default_layer_stem(layer->type());
      int n = counters[stem]++;
      layer->set_name(n == 0 ? stem : stem + "_" + std::to_string(n));
    }
    if (!names.insert(layer->name()).second)
      throw_invalid(source + ": layers[" + std::to_string(i) + "]: duplicate layer name \"" + layer->name() + "\"");
    layer->set_index(static_cast<int>(i));
    shape = layer->build(shape);
    if (shape.numel() > (int64_t(1) << 28))
      throw_invalid(source + ": layer '" + layer->name() + "' output " + shape.str() + " is too large");
    if (layer->ends_with_softmax() && i + 1 != layers.size())
      throw_invalid(source + ": layer '" + layer->name() + "' applies softmax but is not the last layer",
                    "softmax belongs on the output layer only");
    m.layers_.push_back(std::move(layer));
  }
  if (!m.layers_.back()->ends_with_softmax() || m.output_shape().rank() != 1)
    throw_invalid(source + ": the last layer must output class probabilities with \"activation\": \"softmax\"",
                  "Tandem trains classifiers with softmax cross-entropy; end with e.g. "
                  "{\"type\": \"Dense\", \"units\": 10, \"activation\": \"softmax\"}");

  // Lay out the arena: trainable parameters first, then non-trainable state.
  size_t offset = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t li = 0; li < m.layers_.size(); ++li) {
      auto specs = m.layers_[li]->param_specs();
      for (size_t pi = 0; pi < specs.size(); ++pi) {
        if (specs[pi].trainable != (pass == 0)) continue;
        ParamSlot s;
        s.name = m.layers_[li]->name() + "/" + specs[pi].name;
        s.shape = specs[pi].shape;
        s.offset = offset;
        s.layer = static_cast<int>(li);
        s.index = static_cast<int>(pi);
        s.spec = specs[pi];
        offset = align_up(offset + static_cast<size_t>(s.shape.numel()));
        m.params_.push_back(std::move(s));
      }
    }
    if (pass == 0) m.trainable_floats_ = offset;
  }
  m.arena_floats_ = offset;
  // Keep file order = layer order (as Keras lists weights); the arena order is in the offsets.
  std::stable_sort(m.params_.begin(), m.params_.end(), [](const ParamSlot& a, const ParamSlot& b) {
    return a.layer != b.layer ? a.layer < b.layer : a.index < b.index;
  });
  return m;
}

Model Model::from_name_or_file(const std::string& model) {
  if (model == "mlp" || model == "cnn") return from_spec(preset(model), "preset '" + model + "'");
  std::ifstream in(model);
  if (!in) {
    if (model.find('/') == std::string::npos && model.find(".json") == std::string::npos)
      throw_invalid("unknown model '" + model + "'", "use --model mlp, --model cnn or --model FILE.json");
    throw_io("cannot open model spec '" + model + "'", "check the path");
  }
  json spec;
  try {
    spec = json::parse(in);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number that overflows a double
    throw_invalid(model + ": not valid JSON: " + e.what(), "check the file with e.g. python3 -m json.tool");
  }
  return from_spec(spec, model);
}

int64_t Model::param_count() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.shape.numel();
  return n;
}

int64_t Model::trainable_param_count() const {
  int64_t n = 0;
  for (const auto& p : params_)
    if (p.spec.trainable) n += p.shape.numel();
  return n;
}

json Model::spec() const {
  json layers = json::array();
  for (const auto& l : layers_) layers.push_back(l->config());
  return json{{"name", name_}, {"input_shape", input_shape_.dims}, {"layers", layers}};
}

std::vector<std::unique_ptr<Layer>> Model::instantiate() const {
  std::vector<std::unique_ptr<Layer>> out;
  Shape shape = input_shape_;
  for (const auto& l : layers_) {
    auto copy = make_layer(l->config(), "layer '" + l->name() + "'");
    copy->set_index(l->index());
    shape = copy->build(shape);
    out.push_back(std::move(copy));
  }
  return out;
}

std::vector<float> Model::initial_weights(uint64_t seed) const {
  std::vector<float> arena(arena_floats_, 0.f);
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamSlot& p = params_[i];
    float* w = arena.data() + p.offset;
    const int64_t n = p.shape.numel();
    CounterRng rng(seed, 0x1000 + i);
    const ParamSpec& s = p.spec;
    switch (s.init) {
      case Init::Zeros: std::fill(w, w + n, 0.f); break;
      case Init::Ones: std::fill(w, w + n, 1.f); break;
      case Init::GlorotUniform:
      case Init::HeUniform: {
        double limit = s.init == Init::GlorotUniform ? std::sqrt(6.0 / double(s.fan_in + s.fan_out))
                                                     : std::sqrt(6.0 / double(s.fan_in));
        for (int64_t k = 0; k < n; ++k) w[k] = static_cast<float>((2.0 * rng.uniform() - 1.0) * limit);
        break;
      }
      case Init::HeNormal: {
        // Keras: truncated normal (|z| <= 2) with stddev sqrt(2 / fan_in) / 0.8796...
        double stddev = std::sqrt(2.0 / double(s.fan_in)) / 0.87962566103423978;
        for (int64_t k = 0; k < n; ++k) {
          double z;
          do {
            double u1 = (rng.next_u32() + 1.0) / 4294967297.0, u2 = rng.uniform();
            z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
          } while (std::fabs(z) > 2.0);
          w[k] = static_cast<float>(z * stddev);
        }
        break;
      }
    }
  }
  return arena;
}

std::vector<NamedTensor> Model::to_tensors(const std::vector<float>& arena) const {
  TANDEM_ASSERT(arena.size() == arena_floats_);
  std::vector<NamedTensor> out;
  for (const auto& p : params_) {
    NamedTensor t;
    t.name = p.name;
    t.shape = p.shape;
    t.values.assign(arena.begin() + static_cast<std::ptrdiff_t>(p.offset),
                    arena.begin() + static_cast<std::ptrdiff_t>(p.offset + p.shape.numel()));
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<float> Model::from_tensors(const std::vector<NamedTensor>& tensors, const std::string& source) const {
  std::vector<float> arena(arena_floats_, 0.f);
  std::map<std::string, const NamedTensor*> by_name;
  for (const auto& t : tensors) by_name[t.name] = &t;
  for (const auto& p : params_) {
    auto it = by_name.find(p.name);
    if (it == by_name.end()) throw_data(source + ": tensor '" + p.name + "' is missing", "the weights do not belong to this model");
    if (it->second->shape != p.shape)
      throw_data(source + ": tensor '" + p.name + "' has shape " + it->second->shape.str() + ", the model needs " +
                 p.shape.str());
    std::copy(it->second->values.begin(), it->second->values.end(), arena.begin() + static_cast<std::ptrdiff_t>(p.offset));
  }
  if (by_name.size() != params_.size())
    for (const auto& t : tensors) {
      bool known = false;
      for (const auto& p : params_) known = known || p.name == t.name;
      if (!known) throw_data(source + ": tensor '" + t.name + "' does not belong to this model");
    }
  return arena;
}

std::string Model::summary() const {
  std::ostringstream o;
  const std::string rule(65, '_'), dbl(65, '=');
  auto row = [&](const std::string& a, const std::string& b, const std::string& c) {
    char buf[256];
    std::snprintf(buf, sizeof(buf), " %-28s%-26s%-10s", a.c_str(), b.c_str(), c.c_str());
    std::string s = buf;
    while (!s.empty() && s.back() == ' ') s.pop_back();
    o << s << "\n";
  };
  o << "Model: \"" << name_ << "\"\n" << rule << "\n";
  row("Layer (type)", "Output Shape", "Param #");
  o << dbl << "\n";
  for (size_t i = 0; i < layers_.size(); ++i) {
    int64_t n = 0;
    for (const auto& p : params_)
      if (p.layer == static_cast<int>(i)) n += p.shape.numel();
    row(layers_[i]->name() + " (" + layers_[i]->type() + ")", layers_[i]->output_shape().with_batch(-1).str(),
        with_commas(n));
    if (i + 1 < layers_.size()) o << "\n";
  }
  o << dbl << "\n";
  int64_t total = param_count(), trainable = trainable_param_count();
  o << "Total params: " << with_commas(total) << " (" << human_bytes(4.0 * total) << ")\n";
  o << "Trainable params: " << with_commas(trainable) << " (" << human_bytes(4.0 * trainable) << ")\n";
  o << "Non-trainable params: " << with_commas(total - trainable) << " (" << human_bytes(4.0 * (total - trainable))
    << ")\n";
  o << rule << "\n";
  return o.str();
}

}  // namespace tandem
