"""gelu_linear: GeLU(x @ weight^T + bias) as one CUDA kernel (torch.ops.flashkernel.gelu_linear)."""
from __future__ import annotations

import torch

from flashkernel import _checks, _library

_OP = "flashkernel.gelu_linear"


# The kernels a caller can name for M > 64 (include/flashkernel/gelu_linear.h, GeluLinearBackend).
BACKENDS = ("auto", "sm80", "sm90_wide", "sm90_mid", "sm90_narrow", "sm90_pingpong")


def gelu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                approximate: str = "none", backend: str = "auto") -> torch.Tensor:
    """F.gelu(F.linear(x, weight, bias), approximate=approximate) in one pass over the output.

    x [..., K], weight [N, K], bias [N] or None; float16 or bfloat16 (all the same), fp32
    accumulation; contiguous CUDA tensors; K and N positive multiples of 8; approximate "none"
    (erf) or "tanh". backend picks the kernel for M > 64 rows (M <= 64 always streams the
    weights): "auto" (chosen for the device and shape), "sm80" (the portable mma.sync kernels), or
    one variant of the Hopper TMA + wgmma kernel, "sm90_wide" / "sm90_mid" / "sm90_narrow" /
    "sm90_pingpong" (compute capability 9.x only).
    """
    return torch.ops.flashkernel.gelu_linear(x, weight, bias, approximate=approximate, backend=backend)


def check_args(op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               approximate: str) -> None:
    """The shape/dtype rules of gelu_linear, shared by the fake impl and the Triton twin (same
    messages as the C++ checks)."""
    _checks.one_of(op, approximate, ("none", "tanh"), "approximate")
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: argument 'x' has unsupported dtype {x.dtype}; expected float16 or bfloat16")
    _checks.same_dtype(op, x, weight, "x", "weight")
    _checks.dim(op, weight, 2, "weight", "[out_features, in_features]")
    n, k = weight.shape
    if k <= 0 or k % 8:
        raise ValueError(f"{op}: argument 'weight' must have in_features (size 1) a positive multiple of 8, "
                         f"got shape {tuple(weight.shape)}")
    if n <= 0 or n % 8:
        raise ValueError(f"{op}: argument 'weight' must have out_features (size 0) a positive multiple of 8, "
                         f"got shape {tuple(weight.shape)}")
    if x.dim() < 1:
        raise ValueError(f"{op}: argument 'x' must have at least 1 dimension [..., in_features], got a 0-D tensor")
    if x.shape[-1] != k:
        raise ValueError(f"{op}: argument 'x' must have last dimension in_features = weight.size(1) = {k}, "
                         f"got shape {tuple(x.shape)}")
    if bias is not None:
        _checks.same_dtype(op, x, bias, "x", "bias")
        if bias.dim() != 1 or bias.shape[0] != n:
            raise ValueError(f"{op}: argument 'bias' must have shape [{n}] (out_features), got {tuple(bias.shape)}")


@_library.register_fake("flashkernel::gelu_linear")
def _gelu_linear_fake(x, weight, bias=None, *, approximate="none", backend="auto"):
    check_args(_OP, x, weight, bias, approximate)
    _checks.one_of(_OP, backend, BACKENDS, "backend")
    return x.new_empty((*x.shape[:-1], weight.shape[0]))
