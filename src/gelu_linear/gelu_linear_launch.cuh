// Shared launch plumbing of the gelu_linear kernels (the shared-memory opt-in lives in
// common/launch.h with the other launch helpers).
#pragma once
#include "common/launch.h"

namespace flashkernel::gelu_linear_detail {

using detail::ensure_smem_opt_in;

}  // namespace flashkernel::gelu_linear_detail
