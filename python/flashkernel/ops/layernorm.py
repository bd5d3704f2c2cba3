"""add_layernorm and add_rms_norm: residual add + LayerNorm / RMSNorm in one kernel
(torch.ops.flashkernel.add_layernorm, torch.ops.flashkernel.add_rms_norm)."""
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


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor | None = None, *, weight: torch.Tensor | None = None,
                 eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """s = x + residual (rounded to x's dtype once); returns
    (F.rms_norm(s, (C,), weight, eps), s): the RMSNorm of Llama-family models, fp32 statistics.
    Same tensor rules as add_layernorm; C <= 8192."""
    return torch.ops.flashkernel.add_rms_norm(x, residual, weight, eps)


def check_args(op: str, x, residual, bias, weight, ln_bias) -> None:
    """The shape/dtype rules shared by the fake implementation and the Triton twin."""
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: argument 'x' has unsupported dtype {x.dtype}; expected float32, float16 or bfloat16")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"{op}: argument 'x' must have a non-empty last dimension, got shape {tuple(x.shape)}")
    if residual is not None:
        _checks.same_dtype(op, x, residual, "x", "residual")
        if residual.shape != x.shape:
            raise ValueError(f"{op}: argument 'residual' must have the shape of 'x' {tuple(x.shape)}, got "
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


@_library.register_fake("flashkernel::add_rms_norm")
def _add_rms_norm_fake(x, residual=None, weight=None, eps=1e-6):
    check_args("flashkernel.add_rms_norm", x, residual, None, weight, None)
    return torch.empty_like(x), torch.empty_like(x)
