#include "kernels/cpu/onednn_ops.h"

#ifdef TANDEM_HAVE_DNNL

#include <omp.h>

#include <cstdlib>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "engine/errors.h"

namespace tandem {

namespace {
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

// Runs fn(first, count) over n's binary digits, largest first (n = 37: (0, 32), (32, 4), (36, 1)):
// primitives exist for power-of-two batch sizes only. Serving sees every size from 1 to its largest
// batch, and a plan per size would JIT a kernel and hold laid-out weights for each.
template <class Fn>
void binary_chunks(int n, const Fn& fn) {
  int done = 0;
  for (int chunk = 1 << 30; chunk > 0; chunk >>= 1)
    if ((n - done) & chunk) {
      fn(done, chunk);
      done += chunk;
    }
}

// Memory for oneDNN's blocked tensors, 64-byte aligned, grown on demand and reused by every plan.
struct Buffer {
  float* p = nullptr;
  size_t bytes = 0;
  ~Buffer() { std::free(p); }
  float* at_least(size_t n) {
    if (n > bytes) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, (n + 63) / 64 * 64));
      if (!p) throw_error(ErrorKind::Internal, "out of host memory for oneDNN's blocked tensors");
      bytes = n;
    }
    return p;
  }
};
}  // namespace

struct OneDnnOps::Impl {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};

  // Weights re-laid out into a primitive's format, shared by every plan (every chunk size) that
  // asks for the same format of the same weights.
  struct Filters {
    const float* from;
    size_t bytes;
    dnnl::memory::desc desc;
    dnnl::memory mem;
    bool valid;
  };
  std::vector<Filters> filters;

  // Every primitive runs on a scratchpad of ours (user mode): oneDNN's default one is local to the
  // thread that created the primitive, and a served model's primitives are made by the warm-up and
  // run by the batch threads (the Winograd kernel then wrote through a null scratchpad: SIGSEGV).
  Buffer scratch;
  static dnnl::primitive_attr attr_with(bool relu) {
    dnnl::post_ops ops;
    if (relu) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    attr.set_post_ops(ops);
    return attr;
  }
  void exec(const dnnl::primitive& p, const dnnl::memory::desc& scratch_desc,
            std::unordered_map<int, dnnl::memory> args) {
    if (scratch_desc.get_size())
      args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratch_desc, engine, scratch.at_least(scratch_desc.get_size())));
    p.execute(stream, args);
  }
  struct Reorder {
    dnnl::reorder prim;
    dnnl::memory::desc scratch;
  };
  Reorder make_reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
    const dnnl::reorder::primitive_desc pd(engine, from, engine, to, attr_with(false));
    return Reorder{dnnl::reorder(pd), pd.scratchpad_desc()};
  }
  void exec(const Reorder& r, const dnnl::memory& from, const dnnl::memory& to) {
    exec(r.prim, r.scratch, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
  }

  struct Plan {
    dnnl::convolution_forward conv;
    dnnl::memory::desc src, dst, src_nhwc, dst_nhwc, weights_plain, weights, bias, scratch;
    Reorder to_src, from_dst;  // NHWC <-> the primitive's blocked layout (Winograd)
    bool blocked_io = false;
    size_t weight_bytes = 0;
  };
  // (n, h, w, c, kh, kw, k, sh, sw, pad_top, pad_left, oh, ow, bias, relu)
  using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, int, int, int, bool, bool>;
  std::map<Key, Plan> plans;
  Buffer blocked_src, blocked_dst;

  static bool winograd_shape(const ConvGeometry& g) {
    return g.kh == 3 && g.kw == 3 && g.sh == 1 && g.sw == 1;
  }

  Plan& plan(const ConvGeometry& g, bool has_bias, bool relu) {
    const Key key{g.n, g.h, g.w, g.c, g.kh, g.kw, g.k, g.sh, g.sw, g.pad_top, g.pad_left, g.oh, g.ow, has_bias, relu};
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    Plan p;
    p.src_nhwc = dnnl::memory::desc({g.n, g.c, g.h, g.w}, dt::f32, tag::nhwc);
    p.dst_nhwc = dnnl::memory::desc({g.n, g.k, g.oh, g.ow}, dt::f32, tag::nhwc);
    p.weights_plain = dnnl::memory::desc({g.k, g.c, g.kh, g.kw}, dt::f32, tag::hwio);
    p.bias = dnnl::memory::desc({g.k}, dt::f32, tag::x);
    p.weight_bytes = sizeof(float) * size_t(g.k) * g.c * g.kh * g.kw;
    const int pad_bottom = (g.oh - 1) * g.sh + g.kh - g.h - g.pad_top;
    const int pad_right = (g.ow - 1) * g.sw + g.kw - g.w - g.pad_left;
    const dnnl::primitive_attr attr = attr_with(relu);
    auto make = [&](dnnl::algorithm alg, const dnnl::memory::desc& src, const dnnl::memory::desc& dst) {
      const dnnl::memory::desc weights_any({g.k, g.c, g.kh, g.kw}, dt::f32, tag::any);
      const auto desc = has_bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, src,
                                                                   weights_any, p.bias, dst, {g.sh, g.sw},
                                                                   {g.pad_top, g.pad_left}, {pad_bottom, pad_right})
                                 : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, alg, src,
                                                                   weights_any, dst, {g.sh, g.sw},
                                                                   {g.pad_top, g.pad_left}, {pad_bottom, pad_right});
      return dnnl::convolution_forward::primitive_desc(desc, attr, engine);
    };
    // 3x3 stride-1 layers of two images or more: Winograd F(4,3) in oneDNN's blocked layout, the
    // activations re-laid out on the way in and out. Measured at 2 threads (128->128 channels,
    // 14x14): 1.2-1.8x faster than the direct NHWC convolution at 2 to 256 images including both
    // reorders, 0.75x at one image, where the direct convolution stays.
    dnnl::convolution_forward::primitive_desc pd;
    bool have = false;
    if (winograd_shape(g) && g.n >= 2) {
      try {
        const dnnl::memory::desc src_any({g.n, g.c, g.h, g.w}, dt::f32, tag::any);
        const dnnl::memory::desc dst_any({g.n, g.k, g.oh, g.ow}, dt::f32, tag::any);
        pd = make(dnnl::algorithm::convolution_winograd, src_any, dst_any);
        have = true;
      } catch (const dnnl::error&) {  // no Winograd kernel for this CPU or shape
      }
    }
    if (!have) pd = make(dnnl::algorithm::convolution_direct, p.src_nhwc, p.dst_nhwc);
    p.conv = dnnl::convolution_forward(pd);
    p.src = pd.src_desc();
    p.dst = pd.dst_desc();
    p.weights = pd.weights_desc();
    p.scratch = pd.scratchpad_desc();
    p.blocked_io = p.src != p.src_nhwc || p.dst != p.dst_nhwc;
    if (p.blocked_io) {
      p.to_src = make_reorder(p.src_nhwc, p.src);
      p.from_dst = make_reorder(p.dst, p.dst_nhwc);
    }
    return plans.emplace(key, std::move(p)).first->second;
  }

  // Weights in a primitive's format: laid out once, again only after they were written.
  dnnl::memory laid_out(const dnnl::memory::desc& plain_desc, const dnnl::memory::desc& want, const float* w,
                        size_t bytes) {
    dnnl::memory plain(plain_desc, engine, const_cast<float*>(w));
    if (want == plain_desc) return plain;
    Filters* f = nullptr;
    for (auto& e : filters)
      if (e.from == w && e.desc == want) f = &e;
    if (!f) {
      filters.push_back(Filters{w, bytes, want, dnnl::memory(want, engine), false});
      f = &filters.back();
    }
    if (!f->valid) {
      exec(make_reorder(plain_desc, want), plain, f->mem);
      f->valid = true;
    }
    return f->mem;
  }

  struct DensePlan {
    dnnl::inner_product_forward ip;
    dnnl::memory::desc src, dst, weights_plain, weights, bias, scratch;
  };
  std::map<std::tuple<int, int, int, bool, bool>, DensePlan> dense_plans;  // (m, in, units, bias, relu)

  DensePlan& dense_plan(int m, int in, int units, bool has_bias, bool relu) {
    const auto key = std::make_tuple(m, in, units, has_bias, relu);
    auto it = dense_plans.find(key);
    if (it != dense_plans.end()) return it->second;
    DensePlan p;
    p.src = dnnl::memory::desc({m, in}, dt::f32, tag::nc);
    p.dst = dnnl::memory::desc({m, units}, dt::f32, tag::nc);
    p.weights_plain = dnnl::memory::desc({units, in}, dt::f32, tag::io);  // our [in][units]
    p.bias = dnnl::memory::desc({units}, dt::f32, tag::x);
    const dnnl::memory::desc weights_any({units, in}, dt::f32, tag::any);
    const dnnl::primitive_attr attr = attr_with(relu);
    const auto desc = has_bias ? dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, p.src,
                                                                   weights_any, p.bias, p.dst)
                               : dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, p.src,
                                                                   weights_any, p.dst);
    const dnnl::inner_product_forward::primitive_desc pd(desc, attr, engine);
    p.ip = dnnl::inner_product_forward(pd);
    p.weights = pd.weights_desc();
    p.scratch = pd.scratchpad_desc();
    return dense_plans.emplace(key, std::move(p)).first->second;
  }

  void run(const ConvGeometry& g, const float* x, const float* w, const float* bias, bool relu, float* y) {
    Plan& p = plan(g, bias != nullptr, relu);
    const dnnl::memory weights = laid_out(p.weights_plain, p.weights, w, p.weight_bytes);
    dnnl::memory src(p.src_nhwc, engine, const_cast<float*>(x)), dst(p.dst_nhwc, engine, y);
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_WEIGHTS, weights}};
    if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(p.bias, engine, const_cast<float*>(bias)));
    if (!p.blocked_io) {
      args.emplace(DNNL_ARG_SRC, src);
      args.emplace(DNNL_ARG_DST, dst);
      exec(p.conv, p.scratch, std::move(args));
      return;
    }
    dnnl::memory bsrc(p.src, engine, blocked_src.at_least(p.src.get_size()));
    dnnl::memory bdst(p.dst, engine, blocked_dst.at_least(p.dst.get_size()));
    exec(p.to_src, src, bsrc);
    args.emplace(DNNL_ARG_SRC, bsrc);
    args.emplace(DNNL_ARG_DST, bdst);
    exec(p.conv, p.scratch, std::move(args));
    exec(p.from_dst, bdst, dst);
  }
};

OneDnnOps::OneDnnOps() : impl_(std::make_unique<Impl>()) {}
OneDnnOps::~OneDnnOps() = default;

void OneDnnOps::conv_forward(const ConvGeometry& g, const float* x, const float* w, const float* bias, bool relu,
                             float* y, int threads) {
  omp_set_num_threads(threads);
  try {
    const int64_t in_s = int64_t(g.h) * g.w * g.c, out_s = int64_t(g.oh) * g.ow * g.k;
    binary_chunks(g.n, [&](int first, int count) {
      ConvGeometry part = g;
      part.n = count;
      impl_->run(part, x + first * in_s, w, bias, relu, y + first * out_s);
    });
    impl_->stream.wait();
  } catch (const dnnl::error& err) {
    throw_error(ErrorKind::Internal, std::string("oneDNN convolution failed: ") + err.what(),
                "please report this as a bug");
  }
}

// Measured at 2 threads against dnnl_sgemm plus the bias and ReLU loops (the GEMM path): the
// inner product is 1.1-1.8x faster from 16 rows on for the mlp's 784x300, 300x100 and 100x10 and
// the cnn's 64x10, slower below 16 rows, and slower for the cnn's 6272x64 (a long reduction over
// few outputs) at 1 and 16 rows.
int OneDnnOps::dense_rows(int m, int in, int units) {
  if (int64_t(in) > 16 * int64_t(units)) return 0;
  return m - m % 16;
}

void OneDnnOps::dense_forward(const float* x, const float* w, const float* bias, bool relu, int m, int in, int units,
                              float* y, int threads) {
  omp_set_num_threads(threads);
  try {
    // dense_rows is a multiple of 16, so every chunk has 16 rows or more.
    binary_chunks(dense_rows(m, in, units), [&](int first, int count) {
      Impl::DensePlan& p = impl_->dense_plan(count, in, units, bias != nullptr, relu);
      auto& e = impl_->engine;
      std::unordered_map<int, dnnl::memory> args{
          {DNNL_ARG_SRC, dnnl::memory(p.src, e, const_cast<float*>(x + int64_t(first) * in))},
          {DNNL_ARG_WEIGHTS, impl_->laid_out(p.weights_plain, p.weights, w, sizeof(float) * size_t(in) * units)},
          {DNNL_ARG_DST, dnnl::memory(p.dst, e, y + int64_t(first) * units)}};
      if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(p.bias, e, const_cast<float*>(bias)));
      impl_->exec(p.ip, p.scratch, std::move(args));
    });
    impl_->stream.wait();
  } catch (const dnnl::error& err) {
    throw_error(ErrorKind::Internal, std::string("oneDNN inner product failed: ") + err.what(),
                "please report this as a bug");
  }
}

void OneDnnOps::weights_written(const void* p, size_t bytes) {
  const auto* lo = static_cast<const char*>(p);
  for (auto& f : impl_->filters) {
    const auto* w = reinterpret_cast<const char*>(f.from);
    if (lo < w + f.bytes && w < lo + bytes) f.valid = false;
  }
}

}  // namespace tandem

#endif  // TANDEM_HAVE_DNNL
