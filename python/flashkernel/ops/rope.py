"""Rotary position embedding: rope (cos/sin tables), rope_fused (angles in the kernel) and
rope_cache (the tables, built on the GPU).

Convention (shared by CUDA, Triton and the tests): inv_freq[i] = float32(base ** (-2i / r))
computed in float64; theta = float32(position) * inv_freq[i] in fp32; cos/sin with accurate
sincosf. style="neox" rotates (x[i], x[i + r/2]) like HuggingFace's rotate_half;
style="gptj" rotates (x[2i], x[2i+1]). Dims past rotary_dim are copied unchanged.
"""
from __future__ import annotations

import torch

from flashkernel import _checks, _library

STYLES = ("neox", "gptj")


def _check_style(op: str, style: str) -> None:
    _checks.one_of(op, style, STYLES, "style")


def rope_cache(max_positions: int, rotary_dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32,
               device: torch.device | str | int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each [max_positions, rotary_dim // 2] of `dtype`, computed by a GPU kernel in fp32."""
    op = "flashkernel.rope_cache"
    if not isinstance(max_positions, int) or max_positions < 0:
        raise ValueError(f"{op}: argument 'max_positions' must be an int >= 0, got {max_positions!r}")
    if not isinstance(rotary_dim, int) or rotary_dim < 2 or rotary_dim % 2:
        raise ValueError(f"{op}: argument 'rotary_dim' must be even and >= 2, got {rotary_dim!r}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: argument 'dtype' has unsupported dtype {dtype}; expected float32, float16 or bfloat16")
    dev = torch.device("cuda") if device is None else torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"{op}: argument 'device' must be a CUDA device, got {dev}")
    cos = torch.empty((max_positions, rotary_dim // 2), dtype=dtype, device=dev)
    sin = torch.empty_like(cos)
    torch.ops.flashkernel.rope_cache_fill(cos, sin, float(base))
    return cos, sin


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
         positions: torch.Tensor | None = None, *, style: str = "neox", rotary_dim: int | None = None,
         inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates q [B, Hq, N, d] and k [B, Hk, N, d] (any strides, contiguous last dim; fp16/bf16/fp32)
    with cos/sin tables [P, rotary_dim // 2] (float32 or q's dtype) at `positions` (None: 0..N-1,
    [N] or [B, N] int32/int64). One launch for q and k; math in fp32. inplace=True overwrites q
    and k and returns them."""
    _check_style("flashkernel.rope", style)
    if inplace:
        torch.ops.flashkernel.rope_(q, k, cos, sin, positions, style, rotary_dim)
        return q, k
    return torch.ops.flashkernel.rope(q, k, cos, sin, positions, style, rotary_dim)


def rope_fused(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor | None = None, *, base: float = 10000.0,
               style: str = "neox", rotary_dim: int | None = None,
               inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Like rope(), with the angles computed in the kernel (no table); rotary_dim defaults to d."""
    _check_style("flashkernel.rope_fused", style)
    if inplace:
        torch.ops.flashkernel.rope_fused_(q, k, positions, float(base), style, rotary_dim)
        return q, k
    return torch.ops.flashkernel.rope_fused(q, k, positions, float(base), style, rotary_dim)


# ------------------------------------------------------------------ fake (meta) implementations
def _fake_check_qk(op: str, q, k, positions) -> None:
    _checks.dim(op, q, 4, "q", "[batch, heads, seq, head_dim]")
    _checks.dim(op, k, 4, "k", "[batch, heads, seq, head_dim]")
    _checks.same_dtype(op, q, k, "q", "k")
    if (q.shape[0], q.shape[2], q.shape[3]) != (k.shape[0], k.shape[2], k.shape[3]):
        raise ValueError(f"{op}: arguments 'q' and 'k' must agree on batch, seq and head_dim (dims 0, 2, 3), "
                         f"got shapes {tuple(q.shape)} and {tuple(k.shape)}")
    if positions is not None and positions.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{op}: argument 'positions' must be int32 or int64, got {positions.dtype}")


def _fake_out(q):
    return torch.empty_like(q)


@_library.register_fake("flashkernel::rope")
def _rope_fake(q, k, cos, sin, positions=None, style="neox", rotary_dim=None):
    _fake_check_qk("flashkernel.rope", q, k, positions)
    return _fake_out(q), _fake_out(k)


@_library.register_fake("flashkernel::rope_")
def _rope_inplace_fake(q, k, cos, sin, positions=None, style="neox", rotary_dim=None):
    _fake_check_qk("flashkernel.rope_", q, k, positions)
    return None


@_library.register_fake("flashkernel::rope_fused")
def _rope_fused_fake(q, k, positions=None, base=10000.0, style="neox", rotary_dim=None):
    _fake_check_qk("flashkernel.rope_fused", q, k, positions)
    return _fake_out(q), _fake_out(k)


@_library.register_fake("flashkernel::rope_fused_")
def _rope_fused_inplace_fake(q, k, positions=None, base=10000.0, style="neox", rotary_dim=None):
    _fake_check_qk("flashkernel.rope_fused_", q, k, positions)
    return None


@_library.register_fake("flashkernel::rope_cache_fill")
def _rope_cache_fill_fake(cos, sin, base):
    return None
