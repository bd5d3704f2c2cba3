// Host side of TMA: building the CUtensorMap a kernel's cp.async.bulk.tensor reads (PTX ISA
// "Tensor copy"; CUDA driver API cuTensorMapEncodeTiled). The driver function is looked up
// through the runtime (cudaGetDriverEntryPointByVersion), so the library does not link libcuda.
#pragma once
#include <cuda.h>

#include <cstdint>

#include "flashkernel/tensor.h"

namespace flashkernel::detail {

// A 4-D tiled tensor map of 16-bit elements (fp16 or bf16) with 128-byte swizzle and zero fill
// out of bounds. dims are innermost first (dims[0] contiguous); strides_bytes[i] is the stride of
// dims[i + 1] in bytes; box is the tile one copy moves (box[0] * 2 bytes must be <= 128 for the
// swizzle). Returns false, leaving *map unspecified, when TMA cannot describe the tensor (a stride
// not a multiple of 16 bytes, an unaligned base, a driver without TMA): callers fall back to a
// kernel without TMA.
bool make_tensor_map_4d(CUtensorMap* map, const void* base, DType dtype, const std::uint64_t (&dims)[4],
                        const std::uint64_t (&strides_bytes)[3], const std::uint32_t (&box)[4]);

}  // namespace flashkernel::detail
