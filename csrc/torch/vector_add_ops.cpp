// PyTorch bindings of vector_add and device_info (the first op, and the device query every front end uses).
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include "flashkernel/device_info.h"
#include "flashkernel/vector_add.h"
#include "torch/registration.h"
#include "torch/torch_utils.h"

namespace flashkernel::torch_ops {
namespace {

at::Tensor vector_add_cuda(const at::Tensor& a, const at::Tensor& b) {
  constexpr const char* kOp = "flashkernel.vector_add";
  check_cuda(a, kOp, "a");
  check_cuda_on_device_of(b, a, kOp, "b", "a");
  check_same_shape(a, b, kOp, "a", "b");
  check_same_dtype(a, b, kOp, "a", "b");
  DType dtype = to_dtype(a, kOp, "a");
  check_contiguous(a, kOp, "a");
  check_contiguous(b, kOp, "b");
  const c10::cuda::CUDAGuard guard(a.device());
  at::Tensor out = at::empty_like(a);
  call_library([&] { vector_add(a.data_ptr(), b.data_ptr(), out.data_ptr(), a.numel(), dtype, stream_of(a)); });
  return out;
}

// Returns the fields of flashkernel::DeviceInfo as a tuple (schemas cannot return structs).
std::tuple<std::string, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>
device_info_op(int64_t device) {
  DeviceInfo info = call_library([&] { return device_info(static_cast<int>(device)); });
  return {info.name,
          info.compute_major,
          info.compute_minor,
          info.sm_count,
          static_cast<int64_t>(info.total_memory_bytes),
          static_cast<int64_t>(info.l2_cache_bytes),
          static_cast<int64_t>(info.shared_memory_per_block_optin),
          info.peak_sm_clock_khz,
          info.peak_memory_clock_khz,
          info.memory_bus_width_bits};
}

void impl_kernels(torch::Library& m) {
  m.impl("vector_add", &vector_add_cuda);
}

}  // namespace

void define_vector_add_ops(torch::Library& m) {
  m.def("vector_add(Tensor a, Tensor b) -> Tensor");
  m.def("device_info(int device=-1) -> (str, int, int, int, int, int, int, int, int, int)", &device_info_op);
}

FK_TORCH_IMPL_CUDA_AND_CPU(impl_kernels)

}  // namespace flashkernel::torch_ops
