// The single TORCH_LIBRARY block of the `flashkernel` namespace: every op's schema is defined here
// through the op file's define_*_ops(); implementations are registered next to each op.
#include "torch/registration.h"

TORCH_LIBRARY(flashkernel, m) {
  flashkernel::torch_ops::define_stub_ops(m);
}
