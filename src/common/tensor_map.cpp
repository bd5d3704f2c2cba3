#include "common/tensor_map.h"

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

namespace flashkernel::detail {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_function() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &status) !=
            cudaSuccess ||
        status != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return PFN_cuTensorMapEncodeTiled_v12000{nullptr};
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

}  // namespace

bool make_tensor_map_4d(CUtensorMap* map, const void* base, DType dtype, const std::uint64_t (&dims)[4],
                        const std::uint64_t (&strides_bytes)[3], const std::uint32_t (&box)[4]) {
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16) return false;
  if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0) return false;
  for (std::uint64_t s : strides_bytes) {
    if (s % 16 != 0 || s == 0 || s >= (std::uint64_t(1) << 40)) return false;
  }
  const PFN_cuTensorMapEncodeTiled_v12000 encode = encode_function();
  if (encode == nullptr) return false;
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  const CUresult r = encode(map, dtype == DType::kFloat16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
                            4, const_cast<void*>(base), dims, strides_bytes, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

}  // namespace flashkernel::detail
