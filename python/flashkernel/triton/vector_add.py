"""Triton twin of vector_add."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashkernel import _checks


@triton.jit
def _vector_add_kernel(a_ptr, b_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    a = tl.load(a_ptr + offsets, mask=mask).to(tl.float32)
    b = tl.load(b_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(out_ptr + offsets, (a + b).to(out_ptr.dtype.element_ty), mask=mask)


def vector_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    op = "flashkernel.triton.vector_add"
    _checks.same_shape(op, a, b, "a", "b")
    _checks.same_dtype(op, a, b, "a", "b")
    _checks.contiguous(op, a, "a")
    _checks.contiguous(op, b, "b")
    out = torch.empty_like(a)
    n = a.numel()
    if n:
        block = 4096
        _vector_add_kernel[(triton.cdiv(n, block),)](a, b, out, n, BLOCK=block, num_warps=8)
    return out
