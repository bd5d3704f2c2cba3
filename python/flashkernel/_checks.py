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


def same_device(op: str, a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.device != b.device:
        raise ValueError(f"{op}: arguments '{name_a}' and '{name_b}' must be on the same device, "
                         f"got {a.device} and {b.device}")


def dim(op: str, t: torch.Tensor, ndim: int, name: str, layout: str) -> None:
    if t.dim() != ndim:
        raise ValueError(f"{op}: argument '{name}' must be {ndim}-D {layout}, got shape {tuple(t.shape)}")


def contiguous(op: str, t: torch.Tensor, name: str) -> None:
    if not t.is_contiguous():
        raise ValueError(f"{op}: argument '{name}' must be contiguous (call .contiguous() first), "
                         f"got strides {tuple(t.stride())}")


def one_of(op: str, value, choices: tuple[str, ...], name: str) -> None:
    """`value` is one of the string `choices` (the C++ ops' parse_choice says the same)."""
    if value not in choices:
        names = ", ".join(f"'{c}'" for c in choices[:-1]) + f" or '{choices[-1]}'"
        raise ValueError(f"{op}: argument '{name}' must be {names}, got {value!r}")
