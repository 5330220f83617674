// tandem inspect: list a model version's tensors with shapes and CRC32C, verify them, print the
// digest of all weights; --compare prints the largest differences against another version.
#include <cmath>
#include <cstdio>
#include <map>

#include "engine/errors.h"
#include "export/exporter.h"
#include "tools/cli.h"

namespace tandem::cli {

using nlohmann::json;

namespace {

struct Diff {
  double max_abs = 0, max_rel = 0;
  std::string worst_tensor;
};

// max_rel_diff is relative to each tensor's largest magnitude (max|a-b| / max|b|): element-wise
// ratios are meaningless for weights near zero.
Diff compare(const std::vector<NamedTensor>& a, const std::vector<NamedTensor>& b, const std::string& a_dir,
             const std::string& b_dir) {
  std::map<std::string, const NamedTensor*> other;
  for (const auto& t : b) other[t.name] = &t;
  if (a.size() != b.size())
    throw_invalid("'" + a_dir + "' has " + std::to_string(a.size()) + " tensors, '" + b_dir + "' has " +
                  std::to_string(b.size()), "compare versions of the same model");
  Diff d;
  for (const auto& t : a) {
    auto it = other.find(t.name);
    if (it == other.end()) throw_invalid("tensor '" + t.name + "' is missing from '" + b_dir + "'");
    if (it->second->shape != t.shape)
      throw_invalid("tensor '" + t.name + "' has shape " + t.shape.str() + " in '" + a_dir + "' but " +
                    it->second->shape.str() + " in '" + b_dir + "'");
    double abs_max = 0, ref_max = 0;
    for (size_t i = 0; i < t.values.size(); ++i) {
      abs_max = std::max(abs_max, std::fabs(double(t.values[i]) - double(it->second->values[i])));
      ref_max = std::max(ref_max, std::fabs(double(it->second->values[i])));
    }
    double rel = ref_max > 0 ? abs_max / ref_max : (abs_max > 0 ? INFINITY : 0);
    if (rel > d.max_rel || d.worst_tensor.empty()) d.worst_tensor = t.name;
    d.max_abs = std::max(d.max_abs, abs_max);
    d.max_rel = std::max(d.max_rel, rel);
  }
  return d;
}

}  // namespace

Command add_inspect(CLI::App& root) {
  struct Args {
    std::string dir, compare;
    bool json_out = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* c = root.add_subcommand("inspect", "List, verify and digest the tensors of a model version");
  c->add_option("MODEL_VERSION_DIR", a->dir, "a model version directory, e.g. out/model/1")->required();
  c->add_flag("--json", a->json_out, "print the result as JSON");
  c->add_option("--compare", a->compare, "another model version: print max_abs_diff and max_rel_diff");
  return Command{c, [a]() -> int {
                   ModelVersion v = read_model_version(a->dir);  // verifies every checksum
                   json out{{"dir", a->dir}, {"name", v.model_json.value("name", "")}, {"tensors", json::array()}};
                   int64_t total = 0;
                   for (const auto& t : v.tensors) {
                     char crc[16];
                     std::snprintf(crc, sizeof(crc), "%08x", crc32c(t.values.data(), t.values.size() * sizeof(float)));
                     out["tensors"].push_back({{"name", t.name}, {"dtype", "float32"}, {"shape", t.shape.dims}, {"crc32c", crc}});
                     total += t.shape.numel();
                   }
                   out["parameters"] = total;
                   out["digest"] = weights_digest(v.tensors);
                   out["verified"] = true;
                   out["export"] = describe_export(a->dir);
                   if (!a->compare.empty()) {
                     ModelVersion o = read_model_version(a->compare);
                     Diff d = compare(v.tensors, o.tensors, a->dir, a->compare);
                     out["compare"] = {{"other", a->compare},
                                       {"max_abs_diff", d.max_abs},
                                       {"max_rel_diff", d.max_rel},
                                       {"worst_tensor", d.worst_tensor},
                                       {"identical", weights_digest(o.tensors) == weights_digest(v.tensors)}};
                   }
                   if (a->json_out) {
                     std::printf("%s\n", out.dump(2).c_str());
                     return 0;
                   }
                   std::printf("model version %s (%s)\n", a->dir.c_str(), out["name"].get<std::string>().c_str());
                   std::printf("  %-36s %-8s %-22s %s\n", "tensor", "dtype", "shape", "crc32c");
                   for (size_t i = 0; i < v.tensors.size(); ++i)
                     std::printf("  %-36s %-8s %-22s %s\n", v.tensors[i].name.c_str(), "float32",
                                 v.tensors[i].shape.str().c_str(),
                                 out["tensors"][i]["crc32c"].get<std::string>().c_str());
                   std::printf("parameters: %lld\nall checksums verified\ndigest: %s\n", static_cast<long long>(total),
                               out["digest"].get<std::string>().c_str());
                   const json& ex = out["export"];
                   if (ex.contains("formats") && !ex["formats"].empty())
                     std::printf("exported formats: %s\n%s\n", ex["formats"].dump().c_str(), ex.dump(2).c_str());
                   if (out.contains("compare"))
                     std::printf("compare with %s\nmax_abs_diff: %.6e\nmax_rel_diff: %.6e (worst: %s)\nidentical: %s\n",
                                 a->compare.c_str(), out["compare"]["max_abs_diff"].get<double>(),
                                 out["compare"]["max_rel_diff"].get<double>(),
                                 out["compare"]["worst_tensor"].get<std::string>().c_str(),
                                 out["compare"]["identical"].get<bool>() ? "yes" : "no");
                   return 0;
                 }};
}

}  // namespace tandem::cli
