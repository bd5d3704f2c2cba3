"""Shape checks the fake (meta) implementations share with the C++ ones, so torch.compile
reports the same errors while tracing as eager mode does when running."""
from __future__ import annotations

import torch


def same_shape(op: str, a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{op}: arguments '{name_a}' and '{name_b}' must have the same shape, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")


def same_dtype(op: str, a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: arguments '{name_a}' and '{name_b}' must have the same dtype, "
                        f"got {a.dtype} and {b.dtype}")
