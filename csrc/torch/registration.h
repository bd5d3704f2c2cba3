// Registration convention: library.cpp holds the single TORCH_LIBRARY(flashkernel, m) block with
// the skeleton ops; every other op file defines its schemas with TORCH_LIBRARY_FRAGMENT and its
// kernels with TORCH_LIBRARY_IMPL, so adding an op touches no shared file.
#pragma once
#include <torch/library.h>

namespace flashkernel::torch_ops {

void define_vector_add_ops(torch::Library& m);

}  // namespace flashkernel::torch_ops
