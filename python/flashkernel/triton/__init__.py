"""Triton twins of the CUDA ops: same signatures and semantics, written in Triton.
They run on the GPU, and on the CPU under TRITON_INTERPRET=1 (how CI checks them)."""
from flashkernel.triton.reduce import reduce_max, reduce_sum
from flashkernel.triton.vector_add import vector_add

__all__ = ["reduce_max", "reduce_sum", "vector_add"]
