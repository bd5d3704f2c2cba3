"""Triton twins of the CUDA ops: same signatures and semantics, written in Triton.
They run on the GPU, and on the CPU under TRITON_INTERPRET=1 (how CI checks them)."""
from flashkernel.triton.vector_add import vector_add

__all__ = ["vector_add"]
