// cuDNN's fused attention on the host (see emu_cudnn.h): the graph's checks, then plain loops over
// strided tensors in double.
#include "engine/cuda/emu/emu_cudnn.h"

#include <cmath>
#include <algorithm>
#include <limits>
#include <unordered_set>

#include "engine/cuda/emu/emu_bf16.h"

namespace syemu::cudnn {

struct cudnnContext {
  cudaStream_t stream = nullptr;
};

size_t cudnnGetVersion() { return 91900; }

const char* cudnnGetErrorString(cudnnStatus_t s) {
  switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
  }
  return "CUDNN_STATUS_UNKNOWN";
}

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  if (!handle) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
  *handle = new cudnnContext{};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  delete handle;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
  handle->stream = stream;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnGetStream(cudnnHandle_t handle, cudaStream_t* stream) {
  if (!handle || !stream) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
  *stream = handle->stream;
  return CUDNN_STATUS_SUCCESS;
}

namespace cudnn_frontend::graph {

namespace {

using E = error_code_t;

int64_t bytes_of(DataType_t t) { return t == DataType_t::FLOAT ? 4 : t == DataType_t::DOUBLE ? 8 : 2; }

// IEEE binary16, round to nearest even (bf16 comes from emu_bf16.h).
float f16_to_f32(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const float s = (h & 0x8000) ? -1.0f : 1.0f;
  if (e == 31) return m ? std::numeric_limits<float>::quiet_NaN() : s * std::numeric_limits<float>::infinity();
  return s * float(e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(1024 + m), e - 25));
}
uint16_t f32_to_f16(float f) {
  if (std::isnan(f)) return 0x7e00;
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(double(f));
  if (a >= 65520.0) return sign | 0x7c00;  // 65504 + half an ulp rounds up past the largest half
  if (a < std::ldexp(1.0, -14)) return sign | uint16_t(std::nearbyint(std::ldexp(a, 24)));  // 1024 is the smallest normal
  int ex;
  std::frexp(a, &ex);  // a in [2^(ex-1), 2^ex)
  double q = std::nearbyint(std::ldexp(a, 11 - ex));  // [1024, 2048]
  int e = ex - 1;
  if (q == 2048) q = 1024, ++e;
  if (e + 15 >= 31) return sign | 0x7c00;
  return sign | uint16_t((e + 15) << 10) | uint16_t(q - 1024);
}

double load(const void* p, DataType_t t, int64_t i) {
  if (t == DataType_t::FLOAT) return static_cast<const float*>(p)[i];
  const uint16_t bits = static_cast<const uint16_t*>(p)[i];
  return t == DataType_t::HALF ? f16_to_f32(bits) : syemu::bf16_bits_to_f32(bits);
}
// Rounds to float, then to the storage type, as a kernel that computes in float would.
void store(void* p, DataType_t t, int64_t i, double v) {
  const float f = float(v);
  if (t == DataType_t::FLOAT) static_cast<float*>(p)[i] = f;
  else static_cast<uint16_t*>(p)[i] = t == DataType_t::HALF ? f32_to_f16(f) : syemu::f32_to_bf16_bits(f);
}

// Elements from the first to one past the last addressed under the strides.
int64_t extent(const Tensor_attributes& t) {
  int64_t e = 1;
  for (size_t i = 0; i < t.get_dim().size(); ++i) e += (t.get_dim()[i] - 1) * t.get_stride()[i];
  return e;
}

std::vector<int64_t> packed_strides(const std::vector<int64_t>& d) {
  return {d[1] * d[2] * d[3], d[2] * d[3], d[3], 1};
}

}  // namespace

template <class A> void Graph::note_mask(const A& a) {
  causal_ = a.right_bound.has_value();
  left_ = a.left_bound;
  if ((a.left_bound && !a.right_bound) || (a.right_bound && *a.right_bound != 0) ||
      (a.right_bound && a.alignment != DiagonalAlignment_t::TOP_LEFT))
    unmodelled_ = "the emulated cuDNN models no mask and the causal mask (top-left, right bound 0) with or without a "
                  "left bound, no other band";
}

Graph::Tensor Graph::tensor(const Tensor_attributes& t) {
  tensors_.push_back(std::make_shared<Tensor_attributes>(t));
  return tensors_.back();
}

std::array<Graph::Tensor, 2> Graph::sdpa(Tensor q, Tensor k, Tensor v, SDPA_attributes a) {
  ++nodes_;
  kind_ = Kind::Forward;
  port_ = {};
  port_[Q] = q, port_[K] = k, port_[V] = v;
  // Node outputs are virtual until the caller marks them set_output(true), as in the frontend.
  port_[O] = tensor(Tensor_attributes().set_name(a.name + "::O").set_is_virtual(true));
  stats_ = a.generate_stats.value_or(false);
  if (stats_) port_[Stats] = tensor(Tensor_attributes().set_name(a.name + "::Stats").set_is_virtual(true));
  port_[Sink] = a.sink;
  scale_ = a.attn_scale;
  note_mask(a);
  return {port_[O], port_[Stats]};
}

std::array<Graph::Tensor, 3> Graph::sdpa_backward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor dout, Tensor stats,
                                                  SDPA_backward_attributes a) {
  ++nodes_;
  kind_ = Kind::Backward;
  port_ = {};
  port_[Q] = q, port_[K] = k, port_[V] = v, port_[O] = o, port_[dO] = dout, port_[Stats] = stats;
  port_[dQ] = tensor(Tensor_attributes().set_name(a.name + "::dQ").set_is_virtual(true));
  port_[dK] = tensor(Tensor_attributes().set_name(a.name + "::dK").set_is_virtual(true));
  port_[dV] = tensor(Tensor_attributes().set_name(a.name + "::dV").set_is_virtual(true));
  port_[Sink] = a.sink, port_[dSink] = a.dsink;
  stats_ = true;
  scale_ = a.attn_scale;
  note_mask(a);
  return {port_[dQ], port_[dK], port_[dV]};
}

error_t Graph::check_tensor(Port p, const char* what, bool needs_layout) {
  Tensor_attributes& t = *port_[p];
  const std::string name = std::string(what) + " (" + t.get_name() + ")";
  if (t.get_data_type() == DataType_t::NOT_SET) t.set_data_type(p == Stats ? DataType_t::FLOAT : io_);
  if (!needs_layout && t.get_dim().empty() && t.get_stride().empty()) return {};
  if (t.get_dim().size() != 4) return {E::ATTRIBUTE_NOT_SET, "The dim for " + name + " is invalid"};
  if (t.get_stride().size() != 4) return {E::ATTRIBUTE_NOT_SET, "The stride for " + name + " is invalid"};
  for (int64_t d : t.get_dim())
    if (d < 1) return {E::INVALID_VALUE, name + ": every dimension must be positive"};
  if (p == Stats) {
    if (t.get_data_type() != DataType_t::FLOAT) return {E::GRAPH_NOT_SUPPORTED, "The Stats output of sdpa must be an FP32 tensor."};
    return {};
  }
  if (t.get_stride()[3] != 1)
    return {E::GRAPH_NOT_SUPPORTED, "The stride for the last dimension corresponding to the embedding size per head "
                                    "should be 1 for " + name};
  const DataType_t dt = t.get_data_type();
  if (dt != DataType_t::HALF && dt != DataType_t::BFLOAT16)
    return {E::GRAPH_NOT_SUPPORTED, name + ": fused SDPA takes fp16 or bf16 (no fp32)"};
  if (dt != port_[Q]->get_data_type()) return {E::GRAPH_NOT_SUPPORTED, name + ": its data type differs from Q's"};
  // The kernels move rows with 16-byte vector loads: every stride of a dimension over 1 must be too.
  for (int i = 0; i < 4; ++i)
    if (t.get_dim()[i] > 1 && t.get_stride()[i] != 1 && (t.get_stride()[i] * bytes_of(dt)) % 16 != 0)
      return {E::GRAPH_NOT_SUPPORTED, name + ": stride " + std::to_string(t.get_stride()[i]) + " of dimension " +
                                          std::to_string(i) + " is not a multiple of the 16-byte alignment"};
  return {};
}

error_t Graph::check_shapes() {
  const auto &q = port_[Q]->get_dim(), &k = port_[K]->get_dim(), &v = port_[V]->get_dim();
  const int64_t b = q[0], hq = q[1], sq = q[2], d = q[3], dv = v[3], skv = k[2];
  if (k[0] != b || v[0] != b || v[2] != skv || k[3] != d)
    return {E::GRAPH_NOT_SUPPORTED, "Q, K and V disagree on batch, key length or head size"};
  if (hq % k[1] != 0 || hq % v[1] != 0)
    return {E::GRAPH_NOT_SUPPORTED, "For group-query attention, number of heads for key and query must be a factor "
                                    "of number of heads for query"};
  if (d % 8 != 0 || dv % 8 != 0) return {E::GRAPH_NOT_SUPPORTED, "hidden_dim should be multiple of 8"};
  if (d > 256 || dv > 256) return {E::GRAPH_NOT_SUPPORTED, "hidden_dim above 256 is not supported on Hopper"};
  if (left_ && *left_ <= 0)
    return {E::INVALID_VALUE, "Left bound (Sliding window length) should be greater than or equals to zero when set."};
  if (left_ && sq > skv)
    return {E::GRAPH_NOT_SUPPORTED, "Sliding window attention is only supported with max_s_q <= max_s_kv."};
  const std::vector<int64_t> want_o{b, hq, sq, dv}, want_stats{b, hq, sq, 1};
  auto same = [](Port p, const std::vector<int64_t>& want, const std::array<Tensor, kPorts>& port) {
    return !port[p] || port[p]->get_dim() == want;
  };
  if (!same(O, want_o, port_) || !same(dO, want_o, port_) || !same(dQ, q, port_) || !same(dK, k, port_) ||
      !same(dV, v, port_))
    return {E::SHAPE_DEDUCTION_FAILED, "O, dO, dQ, dK or dV does not have the dims its node implies"};
  if (port_[Stats] && port_[Stats]->get_dim() != want_stats)
    return {E::SHAPE_DEDUCTION_FAILED, "Stats must be [b, h_q, s_q, 1]"};
  if (kind_ == Kind::Backward && port_[Stats]->get_stride() != packed_strides(want_stats))
    return {E::GRAPH_NOT_SUPPORTED, "For cuDNN versions below 9.26, the Stats input of sdpa_backward must be packed BHSD"};
  return {};
}

// The sink and its gradient: one fp32 logit per query head, [1, h_q, 1, 1].
error_t Graph::check_sinks() {
  if (port_[dSink] && !port_[Sink]) return {E::ATTRIBUTE_NOT_SET, "If dsink is set, sink also needs to be set."};
  const std::vector<int64_t> want{1, port_[Q]->get_dim()[1], 1, 1};
  for (Port p : {Sink, dSink}) {
    if (!port_[p]) continue;
    const Tensor_attributes& t = *port_[p];
    if (p == Sink && t.get_is_virtual()) return {E::ATTRIBUTE_NOT_SET, t.get_name() + ": an input cannot be virtual"};
    if (t.get_data_type() != DataType_t::FLOAT)
      return {E::GRAPH_NOT_SUPPORTED, t.get_name() + ": the sink token and its gradient must be FP32 tensors"};
    if (t.get_dim() != want || t.get_stride().size() != 4)
      return {E::GRAPH_NOT_SUPPORTED, t.get_name() + ": the sink token and its gradient must be [1, h_q, 1, 1]"};
  }
  if (port_[Sink] && kind_ == Kind::Forward && port_[Q]->get_dim()[2] == 1)
    return {E::GRAPH_NOT_SUPPORTED, "decode only mode, i.e. s_q == 1, not supported with sink_token"};
  return {};
}

error_t Graph::validate() {
  if (nodes_ != 1) return {E::GRAPH_NOT_SUPPORTED, "the emulated cuDNN takes one sdpa or sdpa_backward node"};
  if (!unmodelled_.empty()) return {E::GRAPH_NOT_SUPPORTED, unmodelled_};
  for (Port p : {Q, K, V, O, Stats, dO})
    if (kind_ == Kind::Backward || p <= V) {
      if (!port_[p]) return {E::ATTRIBUTE_NOT_SET, "an input tensor of the sdpa node is null"};
      if (port_[p]->get_is_virtual()) return {E::ATTRIBUTE_NOT_SET, port_[p]->get_name() + ": an input cannot be virtual"};
    }
  if (intermediate_ == DataType_t::NOT_SET)
    return {E::ATTRIBUTE_NOT_SET, "Intermediate tensor data type needs to be set as internal tensors require it."};
  const bool fwd = kind_ == Kind::Forward;
  const std::pair<Port, const char*> ports[] = {{Q, "Q"}, {K, "K"}, {V, "V"},   {O, "O"},   {dO, "dO"},
                                                {Stats, "Stats"}, {dQ, "dQ"}, {dK, "dK"}, {dV, "dV"}};
  for (auto [p, what] : ports) {
    if (!port_[p]) continue;
    // The forward infers an O or Stats left without dims and strides (packed BHSD); nothing else.
    if (auto e = check_tensor(p, what, !(fwd && (p == O || p == Stats))); e.is_bad()) return e;
  }
  if (fwd) {
    const auto& q = port_[Q]->get_dim();
    if (port_[O]->get_dim().empty()) port_[O]->set_dim(q).set_stride(packed_strides(q));
    if (port_[Stats] && port_[Stats]->get_dim().empty()) {
      const std::vector<int64_t> sd{q[0], q[1], q[2], 1};
      port_[Stats]->set_dim(sd).set_stride(packed_strides(sd));
    }
  }
  if (auto e = check_shapes(); e.is_bad()) return e;
  if (auto e = check_sinks(); e.is_bad()) return e;
  // Uids: the caller's must be distinct; the rest are assigned, as the frontend does.
  std::unordered_set<int64_t> used;
  for (const Tensor& t : tensors_)
    if (t->has_uid() && !used.insert(t->get_uid()).second)
      return {E::INVALID_VALUE, "uid " + std::to_string(t->get_uid()) + " for tensor named " + t->get_name() +
                                    " has been already assigned to another tensor."};
  for (const Tensor& t : tensors_)
    if (!t->has_uid()) {
      int64_t uid = 1;
      while (used.count(uid)) ++uid;
      t->set_uid(uid);
      used.insert(uid);
    }
  return {};
}

error_t Graph::build(cudnnHandle_t const& handle, const std::vector<HeurMode_t>& modes, BuildPlanPolicy_t, bool) {
  if (!handle) return {E::HANDLE_ERROR, "build needs a cudnn handle"};
  if (modes.empty()) return {E::HEURISTIC_QUERY_FAILED, "no heuristic mode given"};
  if (auto e = validate(); e.is_bad()) return e;
  built_ = true;
  return {};
}

error_t Graph::get_workspace_size(int64_t& bytes) const {
  if (!built_) return {E::GRAPH_EXECUTION_PLAN_CREATION_FAILED, "get_workspace_size before build"};
  const auto& q = port_[Q]->get_dim();
  bytes = kind_ == Kind::Backward ? (q[0] * q[1] * q[2]) * (1 + q[3]) * 4 : 0;  // rowsum(dO O), dQ in fp32
  return {};
}

int64_t Graph::get_workspace_size() const {
  int64_t b = 0;
  (void)get_workspace_size(b);
  return b;
}

error_t Graph::execute(cudnnHandle_t handle, std::unordered_map<int64_t, void*>& pack, void* workspace) const {
  if (!built_) return {E::GRAPH_EXECUTION_FAILED, "execute before build"};
  if (!handle) return {E::HANDLE_ERROR, "execute needs a cudnn handle"};
  std::array<void*, kPorts> ptr{};
  for (int p = 0; p < kPorts; ++p) {
    const Tensor& t = port_[p];
    if (!t || t->get_is_virtual()) continue;
    auto it = pack.find(t->get_uid());
    if (it == pack.end() || !it->second)
      return {E::INVALID_VARIANT_PACK, "no device pointer for uid " + std::to_string(t->get_uid()) + " (" +
                                           t->get_name() + ")"};
    if (p != Stats && p != Sink && p != dSink && reinterpret_cast<uintptr_t>(it->second) % 16 != 0)
      return {E::INVALID_VARIANT_PACK, t->get_name() + ": pointer not 16-byte aligned"};
    // On a GPU a stride that runs past the buffer reads or writes someone else's memory.
    if (!syemu::is_device_memory(it->second, size_t(extent(*t) * bytes_of(t->get_data_type()))))
      return {E::GRAPH_EXECUTION_FAILED, t->get_name() + ": its extent under its strides (" +
                                             std::to_string(extent(*t)) + " elements) is not inside one cudaMalloc allocation"};
    ptr[p] = it->second;
  }
  const int64_t ws = get_workspace_size();
  if (ws > 0 && !syemu::is_device_memory(workspace, size_t(ws)))
    return {E::GRAPH_EXECUTION_FAILED, "the workspace is not " + std::to_string(ws) + " bytes of device memory"};
  if (kind_ == Kind::Forward) run_forward(ptr);
  else run_backward(ptr, workspace);
  return {};
}

// Element (a, b, c, d) of a 4-D tensor lives at a*s0 + b*s1 + c*s2 + d*s3: the strides the caller
// declared, the whole point of the emulation. Inputs are gathered into dense [dim0..dim3] copies
// in double, outputs scattered back through their own strides.
std::vector<double> Graph::gather(Port p, const void* ptr) const {
  const auto &d = port_[p]->get_dim(), &s = port_[p]->get_stride();
  std::vector<double> out(static_cast<size_t>(d[0] * d[1] * d[2] * d[3]));
  size_t n = 0;
  for (int64_t a = 0; a < d[0]; ++a)
    for (int64_t b = 0; b < d[1]; ++b)
      for (int64_t c = 0; c < d[2]; ++c)
        for (int64_t e = 0; e < d[3]; ++e)
          out[n++] = load(ptr, port_[p]->get_data_type(), a * s[0] + b * s[1] + c * s[2] + e * s[3]);
  return out;
}

void Graph::scatter(Port p, void* ptr, const std::vector<double>& v) const {
  if (!ptr) return;  // virtual: never written
  const auto &d = port_[p]->get_dim(), &s = port_[p]->get_stride();
  size_t n = 0;
  for (int64_t a = 0; a < d[0]; ++a)
    for (int64_t b = 0; b < d[1]; ++b)
      for (int64_t c = 0; c < d[2]; ++c)
        for (int64_t e = 0; e < d[3]; ++e)
          store(ptr, port_[p]->get_data_type(), a * s[0] + b * s[1] + c * s[2] + e * s[3], v[n++]);
}

namespace {
// The dense [B, heads, len, D] copies' row (b, head, i).
struct Rows {
  int64_t heads, len, d;
  size_t operator()(int64_t b, int64_t head, int64_t i) const { return size_t(((b * heads + head) * len + i) * d); }
};
double dot(const double* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
}  // namespace

// The keys query i sees: [first, last] (top-left alignment; empty when first > last).
namespace {
struct Band {
  bool causal;
  std::optional<int64_t> left;
  int64_t sk;
  int64_t first(int64_t i) const { return left ? std::max<int64_t>(0, i - *left + 1) : 0; }
  int64_t last(int64_t i) const { return causal ? std::min(sk - 1, i) : sk - 1; }
};
}  // namespace

void Graph::run_forward(const std::array<void*, kPorts>& ptr) const {
  const auto &qd = port_[Q]->get_dim(), &kd = port_[K]->get_dim(), &vd = port_[V]->get_dim();
  const int64_t B = qd[0], H = qd[1], S = qd[2], D = qd[3], DV = vd[3], SK = kd[2], gk = H / kd[1], gv = H / vd[1];
  const std::vector<double> q = gather(Q, ptr[Q]), k = gather(K, ptr[K]), v = gather(V, ptr[V]);
  const std::vector<double> sink = port_[Sink] ? gather(Sink, ptr[Sink]) : std::vector<double>();
  const Rows rq{H, S, D}, ro{H, S, DV}, rk{kd[1], SK, D}, rv{vd[1], SK, DV}, rs{H, S, 1};
  const Band band{causal_, left_, SK};
  const double scale = scale_.value_or(1.0f);
  std::vector<double> o(size_t(B * H * S * DV)), stats(size_t(B * H * S)), sc(static_cast<size_t>(SK));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < S; ++i) {
        const int64_t first = band.first(i), last = band.last(i);
        double mx = sink.empty() ? -std::numeric_limits<double>::infinity() : sink[size_t(h)];
        for (int64_t j = first; j <= last; ++j) {
          sc[size_t(j)] = scale * dot(&q[rq(b, h, i)], &k[rk(b, h / gk, j)], D);
          mx = std::max(mx, sc[size_t(j)]);
        }
        double sum = sink.empty() ? 0 : std::exp(sink[size_t(h)] - mx);  // the sink's term has no value
        double* oi = &o[ro(b, h, i)];
        for (int64_t j = first; j <= last; ++j) {
          const double p = std::exp(sc[size_t(j)] - mx);
          sum += p;
          for (int64_t d = 0; d < DV; ++d) oi[d] += p * v[rv(b, h / gv, j) + size_t(d)];
        }
        for (int64_t d = 0; d < DV; ++d) oi[d] /= sum;
        stats[rs(b, h, i)] = mx + std::log(sum);  // natural log, as cuDNN's Stats
      }
  scatter(O, ptr[O], o);
  if (port_[Stats]) scatter(Stats, ptr[Stats], stats);
}

void Graph::run_backward(const std::array<void*, kPorts>& ptr, void* workspace) const {
  const auto &qd = port_[Q]->get_dim(), &kd = port_[K]->get_dim(), &vd = port_[V]->get_dim();
  const int64_t B = qd[0], H = qd[1], S = qd[2], D = qd[3], DV = vd[3], SK = kd[2], gk = H / kd[1], gv = H / vd[1];
  const std::vector<double> q = gather(Q, ptr[Q]), k = gather(K, ptr[K]), v = gather(V, ptr[V]),
                            o = gather(O, ptr[O]), dout = gather(dO, ptr[dO]), stats = gather(Stats, ptr[Stats]);
  const std::vector<double> sink = port_[Sink] ? gather(Sink, ptr[Sink]) : std::vector<double>();
  const Rows rq{H, S, D}, ro{H, S, DV}, rk{kd[1], SK, D}, rv{vd[1], SK, DV}, rs{H, S, 1};
  const Band band{causal_, left_, SK};
  const double scale = scale_.value_or(1.0f);
  // The workspace, as the library lays out its own: rowsum(dO O) [B, H, S] and the fp32 dQ
  // accumulator [B, H, S, D]. Written before it is read, so a too-small one fails execute above.
  float* rowsum = static_cast<float*>(workspace);
  float* dq_acc = rowsum + B * H * S;
  for (int64_t r = 0; r < B * H * S; ++r) {
    rowsum[r] = float(dot(&dout[size_t(r * DV)], &o[size_t(r * DV)], DV));
    for (int64_t d = 0; d < D; ++d) dq_acc[r * D + d] = 0;
  }
  std::vector<double> dk(k.size()), dv(v.size()), dsink(sink.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < S; ++i) {
        const double lse = stats[rs(b, h, i)], di = rowsum[rs(b, h, i)];
        const double *qi = &q[rq(b, h, i)], *doi = &dout[ro(b, h, i)];
        float* dqi = dq_acc + rq(b, h, i);
        if (!sink.empty()) dsink[size_t(h)] -= std::exp(sink[size_t(h)] - lse) * di;
        for (int64_t j = band.first(i); j <= band.last(i); ++j) {
          const double *kj = &k[rk(b, h / gk, j)], *vj = &v[rv(b, h / gv, j)];
          const double p = std::exp(scale * dot(qi, kj, D) - lse), ds = p * (dot(doi, vj, DV) - di);
          double *dkj = &dk[rk(b, h / gk, j)], *dvj = &dv[rv(b, h / gv, j)];
          for (int64_t d = 0; d < D; ++d) {
            dqi[d] += float(scale * ds * kj[d]);
            dkj[d] += scale * ds * qi[d];  // summed over the kv head's query heads
          }
          for (int64_t d = 0; d < DV; ++d) dvj[d] += p * doi[d];
        }
      }
  scatter(dQ, ptr[dQ], std::vector<double>(dq_acc, dq_acc + q.size()));
  scatter(dK, ptr[dK], dk);
  scatter(dV, ptr[dV], dv);
  if (port_[dSink]) scatter(dSink, ptr[dSink], dsink);
}

}  // namespace cudnn_frontend::graph
}  // namespace syemu::cudnn
