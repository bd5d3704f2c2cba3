"""torch.nn.Module wrappers over the fused ops, drop-in replacements for the PyTorch modules they
fuse: the parameters have the PyTorch modules' names and shapes, so their state dicts load as they
are. Each forward is one call to the op (CUDA tensors); argument checks are the op's own.

    ln = AddLayerNorm(768).cuda().half()        # nn.LayerNorm(768)'s state dict loads into it
    out, residual = ln(x, residual)              # LayerNorm(x + residual), and x + residual
    rms = AddRMSNorm.from_rmsnorm(rms_norm)      # the same for nn.RMSNorm (Llama-family models)
    mlp_up = GeluLinear.from_linear(linear)      # GeLU(linear(x)) in one kernel
    q, k = RotaryEmbedding(128, max_positions=4096).cuda()(q, k, positions)
    out = FlashAttention(causal=True)(q, k, v)   # F.scaled_dot_product_attention(q, k, v, is_causal=True)
"""
from __future__ import annotations

import math

import torch
from torch import nn

from flashkernel import _checks
from flashkernel.ops.attention import flash_attention, window_and_softcap
from flashkernel.ops.gelu_linear import gelu_linear
from flashkernel.ops.layernorm import add_layernorm, add_rms_norm
from flashkernel.ops.rope import STYLES, rope, rope_cache

__all__ = ["AddLayerNorm", "AddRMSNorm", "FlashAttention", "GeluLinear", "RotaryEmbedding"]

_APPROXIMATE = ("none", "tanh")


def _one_dim(owner: str, normalized_shape) -> tuple[int]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if len(shape) != 1 or not isinstance(shape[0], int) or shape[0] < 1:
        raise ValueError(f"flashkernel.nn.{owner}: argument 'normalized_shape' must be one positive int "
                         f"(the last dimension; the kernel normalizes over one dimension), got {normalized_shape!r}")
    return shape


class _AddNorm(nn.Module):
    """What AddLayerNorm and AddRMSNorm share: the one normalized dimension, eps, the optional
    `weight` [C] (ones), the copy of a torch norm module and the repr."""

    _NAME = ""

    def __init__(self, normalized_shape, eps, elementwise_affine: bool, device, dtype):
        super().__init__()
        shape = _one_dim(self._NAME, normalized_shape)
        self.normalized_shape = shape
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    @classmethod
    def _copy_of(cls, module: nn.Module, torch_type: type, method: str, **kwargs):
        """A copy of `module`'s configuration and parameters (same device and dtype)."""
        if not isinstance(module, torch_type):
            raise TypeError(f"flashkernel.nn.{cls._NAME}.{method}: expected an nn.{torch_type.__name__}, got "
                            f"{type(module).__name__}")
        w = module.weight
        m = cls(module.normalized_shape, eps=module.eps, elementwise_affine=w is not None,
                device=None if w is None else w.device, dtype=None if w is None else w.dtype, **kwargs)
        m.load_state_dict(module.state_dict())
        return m

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class AddLayerNorm(_AddNorm):
    """nn.LayerNorm over the last dimension, fused with the residual add before it:
    forward(x, residual) returns (layer_norm(x + residual), x + residual), the sum rounded to x's
    dtype once (the new residual stream of a pre-LN transformer block). Parameters `weight` and
    `bias` [C] as nn.LayerNorm's (absent with elementwise_affine=False; no `bias` with bias=False)."""

    _NAME = "AddLayerNorm"

    def __init__(self, normalized_shape: int | tuple[int] | list[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, device=None, dtype=None):
        super().__init__(normalized_shape, float(eps), elementwise_affine, device, dtype)
        if elementwise_affine and bias:
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_layernorm(cls, layer_norm: nn.LayerNorm) -> AddLayerNorm:
        """A copy of `layer_norm`'s configuration and parameters (same device and dtype)."""
        return cls._copy_of(layer_norm, nn.LayerNorm, "from_layernorm",
                            bias=getattr(layer_norm, "bias", None) is not None)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return add_layernorm(x, residual, weight=self.weight, ln_bias=self.bias, eps=self.eps)


class AddRMSNorm(_AddNorm):
    """nn.RMSNorm over the last dimension, fused with the residual add before it:
    forward(x, residual) returns (rms_norm(x + residual), x + residual). Parameter `weight` [C] as
    nn.RMSNorm's (absent with elementwise_affine=False); eps=None means torch.finfo(x.dtype).eps,
    as in nn.RMSNorm."""

    _NAME = "AddRMSNorm"

    def __init__(self, normalized_shape: int | tuple[int] | list[int], eps: float | None = None,
                 elementwise_affine: bool = True, device=None, dtype=None):
        super().__init__(normalized_shape, eps, elementwise_affine, device, dtype)

    @classmethod
    def from_rmsnorm(cls, rms_norm: nn.RMSNorm) -> AddRMSNorm:
        """A copy of `rms_norm`'s configuration and parameters (same device and dtype)."""
        return cls._copy_of(rms_norm, nn.RMSNorm, "from_rmsnorm")

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        eps = self.eps if self.eps is not None else torch.finfo(x.dtype).eps
        return add_rms_norm(x, residual, weight=self.weight, eps=eps)


class GeluLinear(nn.Module):
    """GeLU(x @ weight^T + bias) in one kernel: nn.Linear followed by nn.GELU(approximate). The
    parameters are nn.Linear's (weight [out_features, in_features], bias [out_features]) with its
    initialization, so an nn.Linear state dict loads unchanged. float16 or bfloat16 on the GPU;
    in_features and out_features multiples of 8."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, approximate: str = "none",
                 device=None, dtype=None):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(n, int) or n < 1 or n % 8:
                raise ValueError(f"flashkernel.nn.GeluLinear: argument '{name}' must be a positive multiple of 8, "
                                 f"got {n!r}")
        _checks.one_of("flashkernel.nn.GeluLinear", approximate, _APPROXIMATE, "approximate")
        self.in_features, self.out_features, self.approximate = in_features, out_features, approximate
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty((out_features, in_features), **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialization: U(-1/sqrt(in_features), 1/sqrt(in_features)) for both."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear, approximate: str = "none") -> GeluLinear:
        """GeluLinear with a copy of `linear`'s parameters (same device and dtype): the fused form of
        nn.Sequential(linear, nn.GELU(approximate=approximate))."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"flashkernel.nn.GeluLinear.from_linear: expected an nn.Linear, got "
                            f"{type(linear).__name__}")
        m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, approximate=approximate,
                device=linear.weight.device, dtype=linear.weight.dtype)
        m.load_state_dict(linear.state_dict())
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_linear(x, self.weight, self.bias, approximate=self.approximate)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"approximate={self.approximate!r}")


def _rope_tables(max_positions: int, dim: int, base: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 cos/sin [max_positions, dim // 2] by flashkernel.ops.rope's convention: on a CUDA
    device the rope_cache kernel, elsewhere the same arithmetic in torch (fp32 inverse frequencies
    computed in float64, one fp32 multiply for the angle)."""
    if torch.device(device if device is not None else "cpu").type == "cuda":
        return rope_cache(max_positions, dim, base=base, dtype=torch.float32, device=device)
    inv_freq = (1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))).to(torch.float32)
    theta = torch.arange(max_positions, dtype=torch.float32)[:, None] * inv_freq
    return theta.cos().to(device), theta.sin().to(device)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding of q [B, Hq, N, d] and k [B, Hk, N, d] (one launch for both).
    `dim` is the rotary dimension (<= d; dims past it pass through), style "neox" (HuggingFace's
    rotate_half) or "gptj" (interleaved pairs). The float32 cos/sin tables [max_positions, dim // 2]
    are non-persistent buffers: rebuilt from the arguments, never in a state dict, and moved with
    the module (keep them float32: module.half() makes them float16, which only q/k of float16 accept)."""

    def __init__(self, dim: int, max_positions: int = 2048, base: float = 10000.0, style: str = "neox",
                 device=None):
        super().__init__()
        if not isinstance(dim, int) or dim < 2 or dim % 2:
            raise ValueError(f"flashkernel.nn.RotaryEmbedding: argument 'dim' must be even and >= 2, got {dim!r}")
        if not isinstance(max_positions, int) or max_positions < 1:
            raise ValueError("flashkernel.nn.RotaryEmbedding: argument 'max_positions' must be an int >= 1, got "
                             f"{max_positions!r}")
        _checks.one_of("flashkernel.nn.RotaryEmbedding", style, STYLES, "style")
        self.dim, self.max_positions, self.base, self.style = dim, max_positions, float(base), style
        cos, sin = _rope_tables(max_positions, dim, self.base, device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor,
                positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, k) rotated at `positions` (None: 0..N-1; [N] or [B, N] int32/int64, each < max_positions)."""
        return rope(q, k, self.cos, self.sin, positions, style=self.style, rotary_dim=self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_positions={self.max_positions}, base={self.base}, style={self.style!r}"


class FlashAttention(nn.Module):
    """softmax(scale * q k^T [masks]) v without materializing the scores: the module form of
    F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale) for q [B, Hq, Nq, d],
    k and v [B, Hkv, Nk, d] (Hq a multiple of Hkv: GQA/MQA), float16 or bfloat16, d in {32, 64,
    80, 96, 128, 256}, with flashkernel.flash_attention's optional sliding `window=(left, right)`
    and `softcap`. No parameters. causal in forward() overrides the constructor's default; a causal
    mask is bottom-right aligned when Nq != Nk (decode), as FlashAttention's."""

    def __init__(self, causal: bool = False, scale: float | None = None, backend: str = "auto",
                 window: tuple[int, int] | None = None, softcap: float | None = None):
        super().__init__()
        window_and_softcap("flashkernel.nn.FlashAttention", window, softcap)  # fail at construction
        self.causal, self.scale, self.backend = bool(causal), scale, backend
        self.window = None if window is None else tuple(window)
        self.softcap = softcap

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool | None = None) -> torch.Tensor:
        return flash_attention(q, k, v, causal=self.causal if causal is None else bool(causal), scale=self.scale,
                               window=self.window, softcap=self.softcap, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"causal={self.causal}, scale={self.scale}, backend={self.backend!r}, window={self.window}, "
                f"softcap={self.softcap}")
