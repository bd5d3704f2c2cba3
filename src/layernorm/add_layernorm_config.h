// add_layernorm's launch constants, host-callable so a CPU test can check its shared memory.
#pragma once
#include <cstdint>

#include "common/smem_budget.h"

namespace flashkernel::layernorm_detail {

inline constexpr int kThreads = 256;
// The row kernel keeps the row as fp32 in dynamic shared memory; with the static reduction
// scratch the total must stay under the 48 KiB a launch gets without an opt-in (on every GPU),
// so rows are capped at 32 KiB.
inline constexpr std::int64_t kMaxCols = 8192;
inline constexpr int kStaticSmemBytes = (kThreads / 32 + 1) * 4;  // block_allreduce scratch
constexpr int row_kernel_dynamic_smem_bytes(std::int64_t cols) { return static_cast<int>(cols) * 4; }
static_assert(row_kernel_dynamic_smem_bytes(kMaxCols) + kStaticSmemBytes <= detail::kDefaultSmemBytes,
              "add_layernorm: the longest row must fit without a shared-memory opt-in");

}  // namespace flashkernel::layernorm_detail
