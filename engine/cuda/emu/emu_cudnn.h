// The subset of cuDNN the project calls, for the host emulator: the C handle API (cudnnCreate,
// cudnnSetStream, cudnnGetErrorString) and the part of cudnn-frontend's v1 graph API that
// engine/cuda/dnn/ uses: a Graph of tensors with dims and strides, one fused scaled-dot-product
// attention node (sdpa) or its backward (sdpa_backward), build, workspace size and execute with a
// variant pack of device pointers keyed by tensor uid. Names, signatures and semantics are the
// library's, so the wrapper's source is the same in both builds; the execute runs on the host.
//
// Semantics, from cuDNN's and cudnn-frontend's documentation of SDPA:
//  * Q [b, h_q, s_q, d_qk], K [b, h_k, s_kv, d_qk], V [b, h_v, s_kv, d_v], O [b, h_q, s_q, d_v],
//    each with its own 4 strides (element (i0..i3) at sum i_n * stride_n), the last stride 1; fp16
//    or bf16 (the graph's io type where a tensor sets none; fp32 is not supported), 16-byte
//    aligned pointers and strides. GQA: h_q a multiple of h_k and h_v, query head n reads kv head
//    n / (h_q / h_k). d_qk and d_v (which may differ, as in MLA's 192 / 128) multiples of 8, at
//    most 256 each (Hopper).
//  * S = attn_scale * Q K^T (no scale when none is set). Masks: none, or the diagonal band with
//    top-left alignment and right bound 0 (set_causal_mask), keeping key j <= query i, optionally
//    with a left bound W > 0 (set_diagonal_band_left_bound, the sliding window) that also drops
//    keys with j + W <= i (the frontend's "column + window > row"). P = softmax(S) per row; O = P V.
//  * Sink (set_sink_token): fp32 [1, h_q, 1, 1], one logit per query head that joins every row's
//    softmax denominator (its max and its sum of exponentials) with no value: P = exp(S - Stats),
//    Stats including the sink. Not with s_q == 1 in the forward, as the frontend refuses.
//  * Stats [b, h_q, s_q, 1], fp32: the natural-log log-sum-exp max + ln(sum exp) of each row of
//    S (and the sink), written when generate_stats is set. An O or Stats the caller leaves without
//    dims and strides is packed [b, h, s, d] (as the frontend infers it).
//  * The backward reads Q, K, V, O, dO and Stats (packed, as backends before 9.26 require) and
//    OVERWRITES dQ, dK, dV (their dims and strides must be set): P = exp(S - Stats),
//    dP = dO V^T, dS = P (dP - rowsum(dO O)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO,
//    dK and dV summed over the query heads of each kv head; with set_dsink_token (which needs the
//    sink too) it overwrites dSink [1, h_q, 1, 1] fp32 = -sum over b and the rows of
//    exp(sink - Stats) rowsum(dO O). Its workspace holds rowsum(dO O) and an fp32 dQ
//    accumulator, as the library's does.
//  * Outputs not marked set_output(true) are virtual: never written.
//
// What the library rejects, this rejects with the same error codes (validate / build return
// GRAPH_NOT_SUPPORTED or ATTRIBUTE_NOT_SET; execute returns INVALID_VARIANT_PACK for a missing
// or misaligned pointer). Stricter than the hardware, where the hardware would fault or silently
// read garbage: every tensor's extent under its strides, and the workspace, must lie inside one
// cudaMalloc allocation (GRAPH_EXECUTION_FAILED). Not modelled: other nodes, dropout, bias,
// padding, paged or ragged tensors, other masks, autotuning, and cuDNN's rounding (the host
// computes in double and rounds each output once; cuDNN rounds P to the io type for P V).
//
// Everything lives in namespace syemu::cudnn, not where cudnn.h and cudnn_frontend.h put it: a
// program that links both builds (the trainer) also compiles the real header-only frontend, whose
// cudnn_frontend::graph classes and inline members would otherwise share mangled names with these
// (an ODR clash the linker resolves silently). cuDNN's C functions could not clash (extern "C"
// against these C++ names) but stay beside the rest.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/cuda/emu/emu_runtime.h"

namespace syemu::cudnn {

// cudnn_graph.h's values.
enum cudnnStatus_t : int {
  CUDNN_STATUS_SUCCESS = 0,
  CUDNN_STATUS_NOT_INITIALIZED = 1001,
  CUDNN_STATUS_BAD_PARAM = 2000,
  CUDNN_STATUS_BAD_PARAM_NULL_POINTER = 2002,
  CUDNN_STATUS_NOT_SUPPORTED = 3000,
  CUDNN_STATUS_INTERNAL_ERROR = 4000,
  CUDNN_STATUS_EXECUTION_FAILED = 5000,
};

struct cudnnContext;
using cudnnHandle_t = cudnnContext*;

size_t cudnnGetVersion();  // 91900: the emulated library is cuDNN 9.19
const char* cudnnGetErrorString(cudnnStatus_t status);
cudnnStatus_t cudnnCreate(cudnnHandle_t* handle);
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle);
cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream);
cudnnStatus_t cudnnGetStream(cudnnHandle_t handle, cudaStream_t* stream);

namespace cudnn_frontend {

enum class [[nodiscard]] error_code_t {
  OK,
  ATTRIBUTE_NOT_SET,
  SHAPE_DEDUCTION_FAILED,
  INVALID_TENSOR_NAME,
  INVALID_VARIANT_PACK,
  GRAPH_NOT_SUPPORTED,
  GRAPH_EXECUTION_PLAN_CREATION_FAILED,
  GRAPH_EXECUTION_FAILED,
  HEURISTIC_QUERY_FAILED,
  UNSUPPORTED_GRAPH_FORMAT,
  CUDA_API_FAILED,
  CUDNN_BACKEND_API_FAILED,
  INVALID_CUDA_DEVICE,
  HANDLE_ERROR,
  INVALID_VALUE,
};

struct [[nodiscard]] error_object {
  error_code_t code = error_code_t::OK;
  std::string err_msg;
  error_object() = default;
  error_object(error_code_t c, std::string m) : code(c), err_msg(std::move(m)) {}
  error_code_t get_code() { return code; }
  std::string get_message() { return err_msg; }
  bool is_good() const { return code == error_code_t::OK; }
  bool is_bad() const { return !is_good(); }
};
using error_t = error_object;

enum class DataType_t { NOT_SET, FLOAT, DOUBLE, HALF, INT8, INT32, BFLOAT16 };
enum class HeurMode_t { A, B, FALLBACK };
enum class BuildPlanPolicy_t { HEURISTICS_CHOICE, ALL };
enum class DiagonalAlignment_t { TOP_LEFT, BOTTOM_RIGHT };

namespace graph {

class Tensor_attributes {
 public:
  using uid_t = int64_t;
  Tensor_attributes& set_name(const std::string& v) { name_ = v; return *this; }
  Tensor_attributes& set_data_type(DataType_t v) { type_ = v; return *this; }
  Tensor_attributes& set_dim(const std::vector<int64_t>& v) { dim_ = v; return *this; }
  Tensor_attributes& set_stride(const std::vector<int64_t>& v) { stride_ = v; return *this; }
  Tensor_attributes& set_uid(uid_t v) { uid_ = v; uid_set_ = true; return *this; }
  Tensor_attributes& set_output(bool v) { virtual_ = !v; return *this; }
  Tensor_attributes& set_is_virtual(bool v) { virtual_ = v; return *this; }
  const std::string& get_name() const { return name_; }
  DataType_t get_data_type() const { return type_; }
  const std::vector<int64_t>& get_dim() const { return dim_; }
  const std::vector<int64_t>& get_stride() const { return stride_; }
  uid_t get_uid() const { return uid_; }
  bool has_uid() const { return uid_set_; }
  bool get_is_virtual() const { return virtual_; }

 private:
  std::string name_;
  DataType_t type_ = DataType_t::NOT_SET;
  std::vector<int64_t> dim_, stride_;
  uid_t uid_ = 0;
  bool uid_set_ = false, virtual_ = false;
};

// The mask, scale and sink options both SDPA nodes share.
template <class Self> class SdpaOptions {
 public:
  Self& set_name(const std::string& v) { name = v; return self(); }
  Self& set_attn_scale(float v) { attn_scale = v; return self(); }
  Self& set_diagonal_alignment(DiagonalAlignment_t v) { alignment = v; return self(); }
  Self& set_diagonal_band_right_bound(int v) { right_bound = v; return self(); }
  Self& set_diagonal_band_left_bound(int v) { left_bound = v; return self(); }
  // As the frontend defines it: a top-left diagonal band with right bound 0.
  Self& set_causal_mask(bool v) {
    if (v) alignment = DiagonalAlignment_t::TOP_LEFT, right_bound = 0;
    return self();
  }
  Self& set_sink_token(std::shared_ptr<Tensor_attributes> v) { sink = std::move(v); return self(); }

  std::string name;
  std::optional<float> attn_scale;
  DiagonalAlignment_t alignment = DiagonalAlignment_t::TOP_LEFT;
  std::optional<int64_t> right_bound, left_bound;
  std::shared_ptr<Tensor_attributes> sink;

 private:
  Self& self() { return static_cast<Self&>(*this); }
};

class SDPA_attributes : public SdpaOptions<SDPA_attributes> {
 public:
  SDPA_attributes& set_generate_stats(bool v) { generate_stats = v; return *this; }
  std::optional<bool> generate_stats;
};

class SDPA_backward_attributes : public SdpaOptions<SDPA_backward_attributes> {
 public:
  SDPA_backward_attributes& set_deterministic_algorithm(bool v) { deterministic = v; return *this; }
  SDPA_backward_attributes& set_dsink_token(std::shared_ptr<Tensor_attributes> v) { dsink = std::move(v); return *this; }
  bool deterministic = false;
  std::shared_ptr<Tensor_attributes> dsink;
};

class Graph {
 public:
  using Tensor = std::shared_ptr<Tensor_attributes>;
  Graph& set_io_data_type(DataType_t t) { io_ = t; return *this; }
  Graph& set_intermediate_data_type(DataType_t t) { intermediate_ = t; return *this; }
  Graph& set_compute_data_type(DataType_t t) { compute_ = t; return *this; }
  Graph& set_name(const std::string& n) { name_ = n; return *this; }

  Tensor tensor(const Tensor_attributes& t);
  // Returns {O, Stats}; Stats is null unless generate_stats.
  std::array<Tensor, 2> sdpa(Tensor q, Tensor k, Tensor v, SDPA_attributes attrs);
  // Returns {dQ, dK, dV}.
  std::array<Tensor, 3> sdpa_backward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor dO, Tensor stats,
                                      SDPA_backward_attributes attrs);

  // validate, build_operation_graph, create_execution_plans, check_support, build_plans.
  error_t validate();
  error_t build(cudnnHandle_t const& handle, const std::vector<HeurMode_t>& modes,
                BuildPlanPolicy_t policy = BuildPlanPolicy_t::HEURISTICS_CHOICE, bool multithreaded = false);
  error_t get_workspace_size(int64_t& bytes) const;
  int64_t get_workspace_size() const;
  error_t execute(cudnnHandle_t handle, std::unordered_map<int64_t, void*>& pack, void* workspace) const;

 private:
  enum class Kind { None, Forward, Backward };
  // Ports: Q K V O Stats [Sink] (forward); Q K V O dO Stats dQ dK dV [Sink dSink] (backward).
  enum Port { Q, K, V, O, Stats, dO, dQ, dK, dV, Sink, dSink, kPorts };
  template <class A> void note_mask(const A& a);
  error_t check_tensor(Port p, const char* what, bool needs_layout);
  error_t check_sinks();
  error_t check_shapes();
  std::vector<double> gather(Port p, const void* ptr) const;
  void scatter(Port p, void* ptr, const std::vector<double>& v) const;
  void run_forward(const std::array<void*, kPorts>& ptr) const;
  void run_backward(const std::array<void*, kPorts>& ptr, void* workspace) const;

  DataType_t io_ = DataType_t::NOT_SET, intermediate_ = DataType_t::NOT_SET, compute_ = DataType_t::NOT_SET;
  std::string name_;
  std::vector<Tensor> tensors_;  // every tensor made by tensor()
  Kind kind_ = Kind::None;
  int nodes_ = 0;
  std::array<Tensor, kPorts> port_{};
  std::optional<float> scale_;
  std::optional<int64_t> left_;  // the band's left bound: the sliding window
  bool causal_ = false, stats_ = false, built_ = false;
  std::string unmodelled_;  // why validate refuses a mask this emulator does not compute
};

}  // namespace graph
}  // namespace cudnn_frontend
}  // namespace syemu::cudnn
