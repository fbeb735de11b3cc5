// The cuDNN wrapper (see dnn.h). Both builds compile this same source: under nvcc against the real
// cuDNN and cudnn-frontend, under g++ against the emulated ones (cudnn_check.h), so the graphs,
// strides and variant packs built here are what the emulator's tests check.
#include "engine/cuda/dnn/dnn.h"

#include <cstring>
#include <memory>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/dnn/cudnn_check.h"

namespace sy::cuda {
SY_CUDA_NS_BEGIN

namespace {

// The caller's mistakes, refused before cuDNN is asked (cuDNN's own refusals are its answers).
void check_desc(const char* op, const SdpaDesc& d) {
  auto fail = [op](const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); };
  if (d.kv <= 0 || d.h <= 0 || d.h % d.kv != 0)
    fail("heads (" + std::to_string(d.h) + ") must be a positive multiple of kv heads (" + std::to_string(d.kv) + ")");
  if (d.window < 0) fail("window must be >= 0, got " + std::to_string(d.window));
  if (d.window > 0 && !d.causal) fail("a sliding window needs the causal mask");
}

}  // namespace

#if SY_HAVE_CUDNN

// Named, not anonymous: Dnn::Impl holds these.
namespace dnn_detail {

// The tensors' uids in the variant pack; fixed so that a cached graph needs no tensor handles.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kdO, kdQ, kdK, kdV, kSink, kdSink };

struct Key {
  bool backward;
  int64_t b, t, h, kv, hd, hv;
  int64_t window;  // 0 when none, and when W >= t (the same attention: every row's keys fit in W)
  uint32_t scale_bits;
  bool causal, sinks;
  DnnType dtype;
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t s = std::hash<int64_t>()(k.b);
    for (int64_t v : {k.t, k.h, k.kv, k.hd, k.hv, k.window, int64_t(k.scale_bits), int64_t(k.causal),
                      int64_t(k.sinks), int64_t(k.dtype), int64_t(k.backward)})
      s = s * 1000003u ^ std::hash<int64_t>()(v);
    return s;
  }
};

Key make_key(bool backward, const SdpaDesc& d) {
  uint32_t bits;
  std::memcpy(&bits, &d.scale, sizeof bits);
  return {backward, d.b, d.t, d.h, d.kv, d.hd, d.hv, d.window < d.t ? d.window : 0, bits, d.causal, d.sinks, d.dtype};
}

// A built graph, or why cuDNN refused it (kept, so a refused shape is not rebuilt at every call).
struct Plan {
  std::shared_ptr<fe::graph::Graph> graph;
  int64_t workspace = 0;
  std::string error;
};

// Declares our [b, t, heads, d] row-major buffer as cuDNN's [b, heads, t, d]: the same memory,
// strided, so nothing is transposed.
void bshd(fe::graph::Tensor_attributes& a, int64_t uid, int64_t b, int64_t t, int64_t heads, int64_t d) {
  a.set_uid(uid).set_dim({b, heads, t, d}).set_stride({t * heads * d, d, heads * d, 1});
}

// Stats [b, h, t, 1] fp32, packed: our lse [b, h, t] (and the only layout backends before 9.26
// read in the backward).
void stats_layout(fe::graph::Tensor_attributes& a, int64_t b, int64_t t, int64_t h) {
  a.set_uid(kStats).set_dim({b, h, t, 1}).set_stride({h * t, t, 1, 1}).set_data_type(fe::DataType_t::FLOAT);
}

// The causal mask as the frontend spells it (set_causal_mask is the same, marked for deprecation):
// top-left diagonal, right bound 0, so key j <= query i. The window is the band's left bound:
// key j is kept where j + W > i.
template <class A> void set_mask(A& attrs, const Key& k) {
  if (!k.causal) return;
  attrs.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT).set_diagonal_band_right_bound(0);
  if (k.window > 0) attrs.set_diagonal_band_left_bound(int(k.window));
}

Plan build_plan(cudnnHandle_t handle, const Key& k) {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(k.dtype == DnnType::BF16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  float scale;
  std::memcpy(&scale, &k.scale_bits, sizeof scale);
  auto input = [&](const char* name, int64_t uid, int64_t heads, int64_t d) {
    fe::graph::Tensor_attributes a;
    bshd(a.set_name(name), uid, k.b, k.t, heads, d);
    return g->tensor(a);
  };
  // sink and dsink: fp32 [1, h, 1, 1], packed (the layout the library documents for them).
  auto per_head = [&](const char* name, int64_t uid) {
    return g->tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim({1, k.h, 1, 1})
                         .set_stride({k.h, 1, 1, 1}).set_data_type(fe::DataType_t::FLOAT));
  };
  auto q = input("q", kQ, k.h, k.hd), kt = input("k", kK, k.kv, k.hd), vt = input("v", kV, k.kv, k.hv);
  if (!k.backward) {
    auto attrs = fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(true).set_attn_scale(scale);
    set_mask(attrs, k);
    if (k.sinks) attrs.set_sink_token(per_head("sink", kSink));
    auto [o, stats] = g->sdpa(q, kt, vt, attrs);
    bshd(o->set_output(true), kO, k.b, k.t, k.h, k.hv);
    stats_layout(stats->set_output(true), k.b, k.t, k.h);
  } else {
    auto o = input("o", kO, k.h, k.hv), dout = input("dout", kdO, k.h, k.hv);
    fe::graph::Tensor_attributes sa;
    stats_layout(sa.set_name("stats"), k.b, k.t, k.h);
    auto stats = g->tensor(sa);
    auto attrs = fe::graph::SDPA_backward_attributes().set_name("sdpa_backward").set_attn_scale(scale);
    set_mask(attrs, k);
    if (k.sinks) attrs.set_sink_token(per_head("sink", kSink)).set_dsink_token(per_head("dsink", kdSink));
    auto [dq, dk, dv] = g->sdpa_backward(q, kt, vt, o, dout, stats, attrs);
    bshd(dq->set_output(true), kdQ, k.b, k.t, k.h, k.hd);
    bshd(dk->set_output(true), kdK, k.b, k.t, k.kv, k.hd);
    bshd(dv->set_output(true), kdV, k.b, k.t, k.kv, k.hv);
  }
  Plan p;
  // build = validate, lower to the backend graph, heuristics (mode A), support check, plan build.
  if (fe::error_t e = g->build(handle, {fe::HeurMode_t::A}); e.is_bad()) {
    p.error = e.get_message();
    return p;
  }
  if (fe::error_t e = g->get_workspace_size(p.workspace); e.is_bad()) {
    p.error = e.get_message();
    return p;
  }
  p.graph = std::move(g);
  return p;
}

}  // namespace dnn_detail

using namespace dnn_detail;

struct Dnn::Impl {
  cudnnHandle_t handle = nullptr;
  void* workspace = nullptr;
  int64_t workspace_bytes = 0;
  std::unordered_map<Key, Plan, KeyHash> plans;

  cudnnHandle_t get_handle() {
    if (!handle) SY_CUDNN_CHECK(cudnnCreate(&handle));
    return handle;
  }
  const Plan& plan(const Key& k) {
    auto it = plans.find(k);
    if (it != plans.end()) return it->second;
    Plan p;
    try {
      p = build_plan(get_handle(), k);
    } catch (const std::exception& e) {  // no device, no libcudnn: refused like a shape cuDNN cannot run
      p = Plan{nullptr, 0, e.what()};
    }
    return plans.emplace(k, std::move(p)).first->second;
  }
  // Grows to the largest plan's need. cudaFree waits for the device, so no running plan still
  // uses the old buffer.
  void* workspace_for(int64_t bytes) {
    if (bytes > workspace_bytes) {
      if (workspace) SY_CUDA_CHECK(cudaFree(workspace));
      workspace = nullptr, workspace_bytes = 0;
      SY_CUDA_CHECK(cudaMalloc(&workspace, size_t(bytes)));
      workspace_bytes = bytes;
    }
    return workspace;
  }
  void run(const char* op, const Key& k, std::unordered_map<int64_t, void*>& pack, cudaStream_t stream) {
    const Plan& p = plan(k);
    if (!p.graph)
      throw std::runtime_error(std::string(op) + ": cuDNN refused " + std::to_string(k.b) + "x" + std::to_string(k.t) +
                               "x" + std::to_string(k.h) + "/" + std::to_string(k.kv) + "x" + std::to_string(k.hd) +
                               "/" + std::to_string(k.hv) + " window " + std::to_string(k.window) +
                               (k.sinks ? " sinks" : "") + ": " + p.error);
    void* ws = workspace_for(p.workspace);
    SY_CUDNN_CHECK(cudnnSetStream(handle, stream));
    SY_CUDNN_CHECK(p.graph->execute(handle, pack, ws));
  }
};

Dnn::Dnn() : impl_(new Impl) {}

Dnn::~Dnn() {
  if (impl_->workspace) cudaFree(impl_->workspace);
  if (impl_->handle) cudnnDestroy(impl_->handle);
  delete impl_;
}

bool Dnn::available() { return true; }

bool Dnn::sdpa_supported(const SdpaDesc& d, std::string* why) {
  check_desc("sdpa_supported", d);
  for (bool backward : {false, true}) {
    const Plan& p = impl_->plan(make_key(backward, d));
    if (!p.graph) {
      if (why) *why = std::string(backward ? "backward: " : "forward: ") + p.error;
      return false;
    }
  }
  return true;
}

void Dnn::sdpa_forward(const SdpaDesc& d, const void* q, const void* k, const void* v, const float* sinks, void* o,
                       float* stats, cudaStream_t stream) {
  check_desc("sdpa_forward", d);
  if (d.b == 0 || d.t == 0) return;
  std::unordered_map<int64_t, void*> pack{{kQ, const_cast<void*>(q)}, {kK, const_cast<void*>(k)},
                                          {kV, const_cast<void*>(v)}, {kO, o}, {kStats, stats}};
  if (d.sinks) pack[kSink] = const_cast<float*>(sinks);
  impl_->run("sdpa_forward", make_key(false, d), pack, stream);
}

void Dnn::sdpa_backward(const SdpaDesc& d, const void* dout, const void* q, const void* k, const void* v,
                        const void* o, const float* stats, const float* sinks, void* dq, void* dk, void* dv,
                        float* dsinks, cudaStream_t stream) {
  check_desc("sdpa_backward", d);
  if (d.b == 0 || d.t == 0) return;
  std::unordered_map<int64_t, void*> pack{
      {kQ, const_cast<void*>(q)}, {kK, const_cast<void*>(k)},     {kV, const_cast<void*>(v)},
      {kO, const_cast<void*>(o)}, {kdO, const_cast<void*>(dout)}, {kStats, const_cast<float*>(stats)},
      {kdQ, dq},                  {kdK, dk},                      {kdV, dv}};
  if (d.sinks) pack[kSink] = const_cast<float*>(sinks), pack[kdSink] = dsinks;
  impl_->run("sdpa_backward", make_key(true, d), pack, stream);
}

#else  // a GPU build without cuDNN's frontend: the fused path reports why it is missing

namespace {
[[noreturn]] void missing(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": cuDNN frontend not found when this was built (cudnn.h, libcudnn and cudnn_frontend.h: "
                           "pip install nvidia-cudnn-frontend, then reconfigure; see docs/cuda.md)");
}
}  // namespace

struct Dnn::Impl {};
Dnn::Dnn() : impl_(new Impl) {}
Dnn::~Dnn() { delete impl_; }
bool Dnn::available() { return false; }
bool Dnn::sdpa_supported(const SdpaDesc& d, std::string* why) {
  check_desc("sdpa_supported", d);
  if (why) *why = "cuDNN frontend not found when this was built";
  return false;
}
void Dnn::sdpa_forward(const SdpaDesc&, const void*, const void*, const void*, const float*, void*, float*,
                       cudaStream_t) {
  missing("sdpa_forward");
}
void Dnn::sdpa_backward(const SdpaDesc&, const void*, const void*, const void*, const void*, const void*,
                        const float*, const float*, void*, void*, void*, float*, cudaStream_t) {
  missing("sdpa_backward");
}

#endif

SY_CUDA_NS_END
}  // namespace sy::cuda
