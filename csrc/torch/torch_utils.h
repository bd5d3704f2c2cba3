// The torch-facing half of argument checking: tensor -> raw pointer/shape, with errors that name
// the argument. Errors become Python ValueError/TypeError instead of a crash or a bare assert.
#pragma once
#include <ATen/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "flashkernel/status.h"
#include "flashkernel/tensor.h"

namespace flashkernel::torch_ops {

inline void check_cuda(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.defined(), op, ": argument '", name, "' is undefined");
  TORCH_CHECK_VALUE(t.is_cuda(), op, ": argument '", name, "' must be a CUDA tensor, got a tensor on ",
                    t.device());
}

inline void check_contiguous(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.is_contiguous(), op, ": argument '", name,
                    "' must be contiguous (call .contiguous() first), got strides ", t.strides());
}

inline void check_last_dim_contiguous(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == 0 || t.size(-1) <= 1 || t.stride(-1) == 1, op, ": argument '", name,
                    "' must have a contiguous last dimension (stride 1), got strides ", t.strides());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op, const char* name_a,
                              const char* name_b) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": arguments '", name_a, "' and '", name_b,
                    "' must be on the same device, got ", a.device(), " and ", b.device());
}

// `t` is a CUDA tensor on the device of `ref`, an argument already checked (the error names `ref` first).
inline void check_cuda_on_device_of(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name,
                                    const char* ref_name) {
  check_cuda(t, op, name);
  check_same_device(ref, t, op, ref_name, name);
}

inline void check_same_shape(const at::Tensor& a, const at::Tensor& b, const char* op, const char* name_a,
                             const char* name_b) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), op, ": arguments '", name_a, "' and '", name_b,
                    "' must have the same shape, got ", a.sizes(), " and ", b.sizes());
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* op, const char* name, const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == dim, op, ": argument '", name, "' must be ", dim, "-D ", layout, ", got shape ",
                    t.sizes());
}

// The value `arg` names among `choices` ({name, value} pairs); otherwise a ValueError naming the
// argument and listing the names: "op: argument 'style' must be 'neox' or 'gptj', got 'x'".
template <typename E, std::size_t N>
E parse_choice(std::string_view arg, const std::pair<std::string_view, E> (&choices)[N], const char* op,
               const char* name) {
  for (const auto& [choice, value] : choices) {
    if (arg == choice) return value;
  }
  std::string names;
  for (std::size_t i = 0; i < N; ++i) {
    names += i == 0 ? "'" : (i + 1 == N ? " or '" : ", '");
    names += std::string(choices[i].first) + "'";
  }
  TORCH_CHECK_VALUE(false, op, ": argument '", name, "' must be ", names, ", got '", std::string(arg), "'");
}

// Maps a torch dtype to a FlashKernel DType; allow_fp32=false for tensor-core ops (fp16/bf16 only).
inline DType to_dtype(const at::Tensor& t, const char* op, const char* name, bool allow_fp32 = true) {
  switch (t.scalar_type()) {
    case at::kFloat:
      if (allow_fp32) return DType::kFloat32;
      break;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: break;
  }
  TORCH_CHECK_TYPE(false, op, ": argument '", name, "' has unsupported dtype ", t.scalar_type(), "; expected ",
                   allow_fp32 ? "float32, float16 or bfloat16" : "float16 or bfloat16");
}

inline void check_same_dtype(const at::Tensor& a, const at::Tensor& b, const char* op, const char* name_a,
                             const char* name_b) {
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), op, ": arguments '", name_a, "' and '", name_b,
                   "' must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
}

inline cudaStream_t stream_of(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

// Whether `stream` is being captured into a CUDA graph. Ops that read device values back to raise
// an error (index range checks) must not synchronize then: they rely on their kernels' own
// guards, which keep every access in bounds but cannot report.
inline bool stream_is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  const cudaError_t err = cudaStreamIsCapturing(stream, &status);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // reported here; must not resurface at the next launch check
    TORCH_CHECK(false, "cudaStreamIsCapturing failed: ", cudaGetErrorString(err));
  }
  return status != cudaStreamCaptureStatusNone;
}

// Runs a FlashKernel C++ API call, translating its exceptions into torch's (and so Python's)
// error classes: ArgumentError -> ValueError, anything else -> RuntimeError.
template <typename Fn>
decltype(auto) call_library(Fn&& fn) {
  try {
    return std::forward<Fn>(fn)();
  } catch (const ArgumentError& e) {
    TORCH_CHECK_VALUE(false, e.what());
  } catch (const OutOfResourcesError& e) {
    TORCH_CHECK(false, e.what());
  } catch (const Error& e) {
    TORCH_CHECK(false, e.what());
  }
}

}  // namespace flashkernel::torch_ops
