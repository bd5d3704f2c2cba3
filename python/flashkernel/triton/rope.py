"""Triton twin of rope / rope_fused / rope_cache: same signatures, angle convention and errors.

One program handles one token and a block of heads of q or k (a single launch covers both: the
second grid axis enumerates q's head blocks, then k's). cos/sin for the token are loaded (or, in
the fused variant, computed with accurate libdevice sin/cos) once per program and reused by every
head of the block.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from flashkernel import _checks

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=64)
def _inv_freq(rotary_dim: int, base: float, device: torch.device) -> torch.Tensor:
    # Same definition as the CUDA op: computed in float64, rounded once to float32.
    exps = torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim
    return (1.0 / (base ** exps)).to(torch.float32).to(device)


@triton.jit
def _sincos(theta, LIBDEVICE: tl.constexpr):
    # libdevice's sinf/cosf are the accurate versions (tl.sin/tl.cos may lower to the approximate
    # hardware instructions); the CPU interpreter has no libdevice and uses numpy's accurate ones.
    if LIBDEVICE:
        return libdevice.sin(theta), libdevice.cos(theta)
    else:
        return tl.sin(theta), tl.cos(theta)


@triton.jit
def _rope_heads(x_ptr, o_ptr, sb, sh, sn, osb, osh, osn, b, n, h0, H, c, s,
                HALF: tl.constexpr, D: tl.constexpr, R: tl.constexpr, BLOCK_H: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, NEOX: tl.constexpr, COPY: tl.constexpr):
    heads = (h0 + tl.arange(0, BLOCK_H))[:, None].to(tl.int64)
    hmask = heads < H
    i = tl.arange(0, BLOCK_P)[None, :]
    m = hmask & (i < HALF)
    src = x_ptr + b * sb + n * sn + heads * sh
    dst = o_ptr + b * osb + n * osn + heads * osh
    if NEOX:
        lo_off = i
        hi_off = i + HALF
    else:
        lo_off = 2 * i
        hi_off = 2 * i + 1
    a = tl.load(src + lo_off, mask=m).to(tl.float32)
    bb = tl.load(src + hi_off, mask=m).to(tl.float32)
    out_ty = o_ptr.dtype.element_ty
    tl.store(dst + lo_off, (a * c - bb * s).to(out_ty), mask=m)
    tl.store(dst + hi_off, (bb * c + a * s).to(out_ty), mask=m)
    if COPY:
        j = R + tl.arange(0, BLOCK_C)[None, :]
        cm = hmask & (j < D)
        tl.store(dst + j, tl.load(src + j, mask=cm), mask=cm)


@triton.jit
def _rope_kernel(q_ptr, k_ptr, qo_ptr, ko_ptr, cos_ptr, sin_ptr, inv_ptr, pos_ptr,
                 qsb, qsh, qsn, kqb, ksh, ksn, qosb, qosh, qosn, kosb, kosh, kosn,
                 N, HQ, HK, P, QBLOCKS,
                 HALF: tl.constexpr, D: tl.constexpr, R: tl.constexpr, BLOCK_H: tl.constexpr,
                 BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, NEOX: tl.constexpr, COPY: tl.constexpr,
                 FUSED: tl.constexpr, HAS_POS: tl.constexpr, PER_BATCH: tl.constexpr,
                 LIBDEVICE: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    b = token // N
    n = token % N
    if HAS_POS:
        if PER_BATCH:
            pos = tl.load(pos_ptr + token).to(tl.int64)
        else:
            pos = tl.load(pos_ptr + n).to(tl.int64)
    else:
        pos = n
    i = tl.arange(0, BLOCK_P)[None, :]
    pmask = i < HALF
    if FUSED:
        theta = pos.to(tl.float32) * tl.load(inv_ptr + i, mask=pmask, other=0.0)
        s, c = _sincos(theta, LIBDEVICE)
    else:
        # Out-of-table positions never read past the table: they give NaN, as in the CUDA kernel.
        valid = (pos >= 0) & (pos < P)
        row = tl.where(valid, pos, 0) * HALF
        c = tl.load(cos_ptr + row + i, mask=pmask & valid, other=float("nan")).to(tl.float32)
        s = tl.load(sin_ptr + row + i, mask=pmask & valid, other=float("nan")).to(tl.float32)
    blk = tl.program_id(1)
    if blk < QBLOCKS:
        _rope_heads(q_ptr, qo_ptr, qsb, qsh, qsn, qosb, qosh, qosn, b, n, blk * BLOCK_H, HQ, c, s,
                    HALF, D, R, BLOCK_H, BLOCK_P, BLOCK_C, NEOX, COPY)
    else:
        _rope_heads(k_ptr, ko_ptr, kqb, ksh, ksn, kosb, kosh, kosn, b, n, (blk - QBLOCKS) * BLOCK_H, HK, c, s,
                    HALF, D, R, BLOCK_H, BLOCK_P, BLOCK_C, NEOX, COPY)


@triton.jit
def _rope_cache_kernel(cos_ptr, sin_ptr, inv_ptr, total, HALF: tl.constexpr, BLOCK: tl.constexpr,
                       LIBDEVICE: tl.constexpr):
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = idx < total
    pos = idx // HALF
    theta = pos.to(tl.float32) * tl.load(inv_ptr + idx % HALF, mask=m, other=0.0)
    s, c = _sincos(theta, LIBDEVICE)
    tl.store(cos_ptr + idx, c.to(cos_ptr.dtype.element_ty), mask=m)
    tl.store(sin_ptr + idx, s.to(sin_ptr.dtype.element_ty), mask=m)


# ------------------------------------------------------------------ argument checks (as the CUDA op)
def _check_qk(op, q, k, positions, style):
    _checks.one_of(op, style, ("neox", "gptj"), "style")
    for name, t in (("q", q), ("k", k)):
        _checks.dim(op, t, 4, name, "[batch, heads, seq, head_dim]")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{op}: argument '{name}' has unsupported dtype {t.dtype}; expected float32, float16 "
                            f"or bfloat16")
        if t.stride(3) != 1:
            raise ValueError(f"{op}: argument '{name}' must have a contiguous last dimension (stride 1), got "
                             f"strides {tuple(t.stride())}")
    _checks.same_dtype(op, q, k, "q", "k")
    _checks.same_device(op, q, k, "q", "k")
    B, _, N, D = q.shape
    if (k.shape[0], k.shape[2], k.shape[3]) != (B, N, D):
        raise ValueError(f"{op}: arguments 'q' and 'k' must agree on batch, seq and head_dim (dims 0, 2, 3), "
                         f"got shapes {tuple(q.shape)} and {tuple(k.shape)}")
    if positions is not None:
        if positions.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"{op}: argument 'positions' must be int32 or int64, got {positions.dtype}")
        _checks.same_device(op, q, positions, "q", "positions")
        if tuple(positions.shape) not in ((N,), (B, N)):
            raise ValueError(f"{op}: argument 'positions' must have shape [seq] = [{N}] or [batch, seq] = "
                             f"[{B}, {N}], got {list(positions.shape)}")


def _check_rotary(op, rotary_dim, head_dim):
    if rotary_dim < 2 or rotary_dim % 2:
        raise ValueError(f"{op}: argument 'rotary_dim' must be even and >= 2, got {rotary_dim}")
    if rotary_dim > head_dim:
        raise ValueError(f"{op}: argument 'rotary_dim' must be <= head_dim ({head_dim}), got {rotary_dim}")


def _launch(q, k, qo, ko, cos, sin, inv, positions, rotary_dim, style, table_rows):
    B, HQ, N, D = q.shape
    HK = k.shape[1]
    if B * N == 0 or HQ + HK == 0:
        return
    half = rotary_dim // 2
    block_p = triton.next_power_of_2(half)
    block_h = max(1, min(triton.next_power_of_2(max(HQ, HK, 1)), 4096 // (2 * block_p)))
    copy = qo.data_ptr() != q.data_ptr() or ko.data_ptr() != k.data_ptr()
    copy = copy and rotary_dim < D
    block_c = triton.next_power_of_2(max(D - rotary_dim, 1))
    qblocks = triton.cdiv(HQ, block_h)
    grid = (B * N, qblocks + triton.cdiv(HK, block_h))
    fused = cos is None
    dummy = inv if fused else cos
    pos = positions.contiguous() if positions is not None else dummy
    _rope_kernel[grid](q, k, qo, ko, dummy if fused else cos, dummy if fused else sin, inv if fused else dummy, pos,
                       *q.stride()[:3], *k.stride()[:3], *qo.stride()[:3], *ko.stride()[:3],
                       N, HQ, HK, table_rows, qblocks,
                       HALF=half, D=D, R=rotary_dim, BLOCK_H=block_h, BLOCK_P=block_p, BLOCK_C=block_c,
                       NEOX=style == "neox", COPY=copy, FUSED=fused, HAS_POS=positions is not None,
                       PER_BATCH=positions is not None and positions.dim() == 2, LIBDEVICE=q.is_cuda, num_warps=4)


def rope_cache(max_positions: int, rotary_dim: int, base: float = 10000.0, dtype: torch.dtype = torch.float32,
               device=None) -> tuple[torch.Tensor, torch.Tensor]:
    op = "flashkernel.triton.rope_cache"
    if not isinstance(max_positions, int) or max_positions < 0:
        raise ValueError(f"{op}: argument 'max_positions' must be an int >= 0, got {max_positions!r}")
    if not isinstance(rotary_dim, int) or rotary_dim < 2 or rotary_dim % 2:
        raise ValueError(f"{op}: argument 'rotary_dim' must be even and >= 2, got {rotary_dim!r}")
    if dtype not in _DTYPES:
        raise TypeError(f"{op}: argument 'dtype' has unsupported dtype {dtype}; expected float32, float16 or bfloat16")
    if not (base > 0 and base != float("inf")):
        raise ValueError(f"{op}: argument 'base' must be a finite number > 0, got {base}")
    dev = torch.device("cuda") if device is None else torch.device(device)
    half = rotary_dim // 2
    cos = torch.empty((max_positions, half), dtype=dtype, device=dev)
    sin = torch.empty_like(cos)
    total = max_positions * half
    if total:
        block = 1024
        _rope_cache_kernel[(triton.cdiv(total, block),)](cos, sin, _inv_freq(rotary_dim, float(base), dev), total,
                                                         HALF=half, BLOCK=block, LIBDEVICE=cos.is_cuda)
    return cos, sin


def rope(q, k, cos, sin, positions=None, *, style="neox", rotary_dim=None, inplace=False):
    op = "flashkernel.triton.rope"
    _check_qk(op, q, k, positions, style)
    for name, t in (("cos", cos), ("sin", sin)):
        _checks.dim(op, t, 2, name, "[max_positions, rotary_dim / 2]")
        _checks.contiguous(op, t, name)
        _checks.same_device(op, q, t, "q", name)
    _checks.same_shape(op, cos, sin, "cos", "sin")
    if cos.dtype != sin.dtype or cos.dtype not in (torch.float32, q.dtype):
        raise TypeError(f"{op}: argument 'cos' must be float32 or q's dtype and match 'sin', got {cos.dtype} and "
                        f"{sin.dtype}")
    table_rotary = 2 * cos.shape[1]
    rotary_dim = table_rotary if rotary_dim is None else rotary_dim
    if rotary_dim != table_rotary:
        raise ValueError(f"{op}: argument 'rotary_dim' ({rotary_dim}) must equal 2 * cos.size(1) = {table_rotary}")
    _check_rotary(op, rotary_dim, q.shape[3])
    if positions is None:
        if q.shape[2] > cos.shape[0]:
            raise ValueError(f"{op}: argument 'cos' table has {cos.shape[0]} positions but seq is {q.shape[2]}")
    elif positions.numel():
        lo, hi = int(positions.min()), int(positions.max())
        if lo < 0 or hi >= cos.shape[0]:
            raise ValueError(f"{op}: argument 'positions' has values in [{lo}, {hi}] but the cos/sin tables hold "
                             f"positions [0, {cos.shape[0]})")
    qo, ko = (q, k) if inplace else (torch.empty_like(q), torch.empty_like(k))
    _launch(q, k, qo, ko, cos, sin, None, positions, rotary_dim, style, cos.shape[0])
    return qo, ko


def rope_fused(q, k, positions=None, *, base=10000.0, style="neox", rotary_dim=None, inplace=False):
    op = "flashkernel.triton.rope_fused"
    _check_qk(op, q, k, positions, style)
    rotary_dim = q.shape[3] if rotary_dim is None else rotary_dim
    _check_rotary(op, rotary_dim, q.shape[3])
    if not (base > 0 and base != float("inf")):
        raise ValueError(f"{op}: argument 'base' must be a finite number > 0, got {base}")
    qo, ko = (q, k) if inplace else (torch.empty_like(q), torch.empty_like(k))
    _launch(q, k, qo, ko, None, None, _inv_freq(rotary_dim, float(base), q.device), positions, rotary_dim, style, 0)
    return qo, ko
