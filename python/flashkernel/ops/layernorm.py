"""add_layernorm: residual add + LayerNorm in one kernel (torch.ops.flashkernel.add_layernorm)."""
from __future__ import annotations

import torch

from flashkernel import _checks, _library

_OP = "flashkernel.add_layernorm"


def add_layernorm(x: torch.Tensor, residual: torch.Tensor | None = None, *, bias: torch.Tensor | None = None,
                  weight: torch.Tensor | None = None, ln_bias: torch.Tensor | None = None,
                  eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """s = x + residual + bias (rounded to x's dtype once); returns
    (F.layer_norm(s, (C,), weight, ln_bias, eps), s). x and residual [..., C] contiguous CUDA
    tensors; bias, weight, ln_bias [C] or None; float32, float16 or bfloat16; fp32 statistics;
    C <= 8192."""
    return torch.ops.flashkernel.add_layernorm(x, residual, bias, weight, ln_bias, eps)


def check_args(op: str, x, residual, bias, weight, ln_bias) -> None:
    """The shape/dtype rules shared by the fake implementation and the Triton twin."""
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: argument 'x' has unsupported dtype {x.dtype}; expected float32, float16 or bfloat16")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"{op}: argument 'x' must have a non-empty last dimension, got shape {tuple(x.shape)}")
    if residual is not None:
        _checks.same_dtype(op, x, residual, "x", "residual")
        if residual.shape != x.shape:
            raise ValueError(f"{op}: argument 'residual' must have x's shape {tuple(x.shape)}, got "
                             f"{tuple(residual.shape)}")
    for name, t in (("bias", bias), ("weight", weight), ("ln_bias", ln_bias)):
        if t is None:
            continue
        _checks.same_dtype(op, x, t, "x", name)
        if t.dim() != 1 or t.shape[0] != x.shape[-1]:
            raise ValueError(f"{op}: argument '{name}' must have shape [{x.shape[-1]}] (x's last dimension), got "
                             f"{tuple(t.shape)}")


@_library.register_fake("flashkernel::add_layernorm")
def _add_layernorm_fake(x, residual=None, bias=None, weight=None, ln_bias=None, eps=1e-5):
    check_args(_OP, x, residual, bias, weight, ln_bias)
    return torch.empty_like(x), torch.empty_like(x)
