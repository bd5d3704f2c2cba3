// The op library is registered once, in library.cpp (TORCH_LIBRARY(flashkernel, m)); each op file
// adds its schemas in a function declared here and its CUDA kernels with TORCH_LIBRARY_IMPL.
#pragma once
#include <torch/library.h>

namespace flashkernel::torch_ops {

void define_stub_ops(torch::Library& m);
// New ops add one line here and one in library.cpp.

}  // namespace flashkernel::torch_ops
