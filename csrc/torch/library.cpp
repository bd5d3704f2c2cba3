// The one TORCH_LIBRARY block of the `flashkernel` namespace (the skeleton ops). Other ops add
// their schemas with TORCH_LIBRARY_FRAGMENT(flashkernel, m) in their own <op>_ops.cpp.
#include "torch/registration.h"

TORCH_LIBRARY(flashkernel, m) {
  flashkernel::torch_ops::define_vector_add_ops(m);
}
