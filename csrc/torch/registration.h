// Registration convention: library.cpp holds the single TORCH_LIBRARY(flashkernel, m) block with
// the skeleton ops; every other op file defines its schemas with TORCH_LIBRARY_FRAGMENT and its
// kernels with FK_TORCH_IMPL_CUDA_AND_CPU, so adding an op touches no shared file.
#pragma once
#include <torch/library.h>

namespace flashkernel::torch_ops {

void define_vector_add_ops(torch::Library& m);

}  // namespace flashkernel::torch_ops

// Registers an op file's kernels, `impls(torch::Library& m)` (its m.impl calls), for CUDA tensors
// and the same functions for CPU tensors, so that a CPU tensor gets the op's own "must be a CUDA
// tensor" error naming the argument, not the dispatcher's "could not run with arguments from the
// CPU backend".
#define FK_TORCH_IMPL_CUDA_AND_CPU(impls)  \
  TORCH_LIBRARY_IMPL(flashkernel, CUDA, m) { \
    impls(m);                                \
  }                                          \
  TORCH_LIBRARY_IMPL(flashkernel, CPU, m) {  \
    impls(m);                                \
  }
