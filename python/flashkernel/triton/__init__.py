"""Triton twins of the CUDA ops: same signatures and semantics, written in Triton.
They run on the GPU, and on the CPU under TRITON_INTERPRET=1 (how CI checks them)."""
from flashkernel.triton.reduce import reduce_max, reduce_sum
from flashkernel.triton.vector_add import vector_add
from flashkernel.triton.attention import flash_attention
from flashkernel.triton.gelu_linear import gelu_linear

__all__ = ["flash_attention", "gelu_linear", "reduce_max", "reduce_sum", "vector_add"]
