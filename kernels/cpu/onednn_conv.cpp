#include "kernels/cpu/onednn_conv.h"

#ifdef TANDEM_HAVE_DNNL

#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "engine/errors.h"

namespace tandem {

struct OneDnnConv::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  struct Plan {
    dnnl::convolution_forward conv;
    dnnl::memory::desc src, weights_plain, dst, bias;
    dnnl::memory weights;  // in the primitive's preferred layout
    dnnl::reorder to_weights;
    bool reorder = false;
  };
  // (n, h, w, c, kh, kw, k, sh, sw, pad_top, pad_left, oh, ow, bias, relu)
  using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int, bool, bool>;
  std::map<Key, Plan> plans;

  Plan& plan(const ConvGeometry& g, bool has_bias, bool relu) {
    const Key key{g.n, g.h, g.w, g.c, g.kh, g.kw, g.k, g.sh, g.sw, g.pad_top, g.pad_left, g.oh, g.ow, has_bias, relu};
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    Plan p;
    p.src = dnnl::memory::desc({g.n, g.c, g.h, g.w}, dt::f32, tag::nhwc);
    p.dst = dnnl::memory::desc({g.n, g.k, g.oh, g.ow}, dt::f32, tag::nhwc);
    p.weights_plain = dnnl::memory::desc({g.k, g.c, g.kh, g.kw}, dt::f32, tag::hwio);
    const dnnl::memory::desc weights_any({g.k, g.c, g.kh, g.kw}, dt::f32, tag::any);
    p.bias = dnnl::memory::desc({g.k}, dt::f32, tag::x);
    const int pad_bottom = (g.oh - 1) * g.sh + g.kh - g.h - g.pad_top;
    const int pad_right = (g.ow - 1) * g.sw + g.kw - g.w - g.pad_left;
    dnnl::post_ops ops;
    if (relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    const auto desc = has_bias ? dnnl::convolution_forward::desc(
                                     dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, p.src,
                                     weights_any, p.bias, p.dst, {g.sh, g.sw}, {g.pad_top, g.pad_left},
                                     {pad_bottom, pad_right})
                               : dnnl::convolution_forward::desc(
                                     dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, p.src,
                                     weights_any, p.dst, {g.sh, g.sw}, {g.pad_top, g.pad_left}, {pad_bottom, pad_right});
    const dnnl::convolution_forward::primitive_desc pd(desc, attr, engine);
    p.conv = dnnl::convolution_forward(pd);
    p.reorder = pd.weights_desc() != p.weights_plain;
    if (p.reorder) {
      p.weights = dnnl::memory(pd.weights_desc(), engine);
      p.to_weights = dnnl::reorder(dnnl::memory(p.weights_plain, engine, DNNL_MEMORY_NONE), p.weights);
    }
    return plans.emplace(key, std::move(p)).first->second;
  }
};

OneDnnConv::OneDnnConv() : impl_(std::make_unique<Impl>()) {}
OneDnnConv::~OneDnnConv() = default;

void OneDnnConv::forward(const ConvGeometry& g, const float* x, const float* w, const float* bias, bool relu, float* y,
                         int threads) {
  omp_set_num_threads(threads);
  try {
    Impl::Plan& p = impl_->plan(g, bias != nullptr, relu);
    auto& e = impl_->engine;
    dnnl::memory src(p.src, e, const_cast<float*>(x)), dst(p.dst, e, y);
    dnnl::memory plain(p.weights_plain, e, const_cast<float*>(w));
    // The weights change every training step: re-laid out per call (a few hundred KiB at most).
    if (p.reorder) p.to_weights.execute(impl_->stream, plain, p.weights);
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, p.reorder ? p.weights : plain}, {DNNL_ARG_DST, dst}};
    if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(p.bias, e, const_cast<float*>(bias)));
    p.conv.execute(impl_->stream, args);
    impl_->stream.wait();
  } catch (const dnnl::error& err) {
    throw_error(ErrorKind::Internal, std::string("oneDNN convolution failed: ") + err.what(),
                "please report this as a bug");
  }
}

}  // namespace tandem

#endif  // TANDEM_HAVE_DNNL
