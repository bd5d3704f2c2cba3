"""reduce_sum / reduce_max: whole-tensor (dim=None) or last-dimension (dim=-1) reductions with
fp32 accumulation, deterministic, output dtype as torch.sum / torch.amax give."""
from __future__ import annotations

import torch

from flashkernel import _checks, _library

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_dim_type(op: str, dim) -> None:
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
        raise TypeError(f"{op}: argument 'dim' must be an int or None, got {type(dim).__name__}")


def check_dim(op: str, x: torch.Tensor, dim) -> bool:
    """Validates `dim` the way the C++ op does; returns True for a whole-tensor reduction.
    Shared by the fake implementations and the Triton twin so every path raises the same errors."""
    if dim is None:
        return True
    check_dim_type(op, dim)
    ndim = max(x.dim(), 1)  # a 0-d tensor counts as 1-D, as in torch
    if not -ndim <= dim < ndim:
        raise ValueError(f"{op}: argument 'dim' is out of range: got {dim} for a tensor of shape "
                         f"{tuple(x.shape)} (expected -1, {ndim - 1} or None)")
    if dim % ndim != ndim - 1:
        raise ValueError(f"{op}: argument 'dim' must be the last dimension (-1 or {ndim - 1}) or None, "
                         f"got {dim} for a tensor of shape {tuple(x.shape)}")
    return x.dim() <= 1


def check_input(op: str, x: torch.Tensor, is_max: bool, dim) -> bool:
    """dtype, layout, dim and emptiness checks (device checks are the caller's); returns whether
    the whole tensor is reduced."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: argument 'x' must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{op}: argument 'x' has unsupported dtype {x.dtype}; expected float32, float16 or bfloat16")
    _checks.contiguous(op, x, "x")
    whole = check_dim(op, x, dim)
    if is_max:
        if whole and x.numel() == 0:
            raise ValueError(f"{op}: argument 'x' is empty; its max is undefined (max has no identity element)")
        if not whole and x.shape[-1] == 0 and _rows(x) > 0:
            raise ValueError(f"{op}: argument 'x' has an empty last dimension (shape {tuple(x.shape)}); the max of "
                             f"an empty row is undefined")
    return whole


def _rows(x: torch.Tensor) -> int:
    rows = 1
    for s in x.shape[:-1]:
        rows *= s
    return rows


def out_shape(x: torch.Tensor, whole: bool) -> tuple[int, ...]:
    return () if whole else tuple(x.shape[:-1])


def reduce_sum(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of all elements (dim=None, 0-d result) or over the last dimension (dim=-1).
    float32/float16/bfloat16 contiguous CUDA tensors; fp32 accumulation; the sum of nothing is 0."""
    check_dim_type("flashkernel.reduce_sum", dim)  # before the schema's less specific error
    return torch.ops.flashkernel.reduce_sum(x, dim)


def reduce_max(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Max of all elements (dim=None) or over the last dimension (dim=-1), like torch.amax: NaN
    propagates; an empty reduction raises ValueError."""
    check_dim_type("flashkernel.reduce_max", dim)
    return torch.ops.flashkernel.reduce_max(x, dim)


@_library.register_fake("flashkernel::reduce_sum")
def _reduce_sum_fake(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    whole = check_input("flashkernel.reduce_sum", x, False, dim)
    return x.new_empty(out_shape(x, whole))


@_library.register_fake("flashkernel::reduce_max")
def _reduce_max_fake(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    whole = check_input("flashkernel.reduce_max", x, True, dim)
    return x.new_empty(out_shape(x, whole))
