"""Triton twin of reduce: reduce_sum / reduce_max with the CUDA op's signature and semantics.

Whole tensor, one launch: programs each fold a chunk of elements into one fp32 partial, take a
ticket from an atomic counter, and the program that draws the last ticket folds the partials in
index order (deterministic: the order never depends on which program finishes last). A tensor
that fits one chunk is folded by a single program. Row-wise: each program owns BLOCK_R rows and
walks their columns in BLOCK_C tiles.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from flashkernel.ops.reduce import check_dim_type, check_input, out_shape

_BLOCK = 4096       # elements per tile (num_warps=8: 16 fp32 / 16 fp16 per thread, 16-byte loads)
_CHUNK_TILES = 8    # tiles one first-stage program folds: 32K elements, partials are n / 32K
_FINAL_BLOCK = 1024


@triton.jit
def _max_nan(a, b):
    # torch.amax propagates NaN; tl.maximum drops it unless asked.
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _fold_block(acc, IS_MAX: tl.constexpr):
    """The block's values folded into one (max with NaN propagation, or the sum)."""
    if IS_MAX:
        r = tl.reduce(acc, 0, _max_nan)
    else:
        r = tl.sum(acc, 0)
    return r


@triton.jit
def _fold_tile(acc, ptr, offs, mask, IS_MAX: tl.constexpr):
    if IS_MAX:
        v = tl.load(ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
        return tl.maximum(acc, v, propagate_nan=tl.PropagateNan.ALL)
    else:
        v = tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)
        return acc + v


@triton.jit
def _full_kernel(x_ptr, part_ptr, count_ptr, out_ptr, n, num_programs, IS_MAX: tl.constexpr, BLOCK: tl.constexpr,
                 TILES: tl.constexpr, FINAL_BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * (BLOCK * TILES)
    offs = tl.arange(0, BLOCK)
    if IS_MAX:
        acc = tl.full([BLOCK], float("-inf"), tl.float32)
    else:
        acc = tl.zeros([BLOCK], tl.float32)
    for t in tl.static_range(TILES):
        idx = start + t * BLOCK + offs
        acc = _fold_tile(acc, x_ptr, idx, idx < n, IS_MAX)
    if IS_MAX:
        r = tl.reduce(acc, 0, _max_nan)
    else:
        r = tl.sum(acc, 0)
    tl.store(part_ptr + pid, r)
    # acq_rel: this program's partial is published before its ticket; the last program's
    # acquire makes every earlier partial visible to the loads below.
    ticket = tl.atomic_add(count_ptr, 1, sem="acq_rel")
    if ticket == num_programs - 1:
        # Names differ from the tile loop's above: Triton would treat a reused name as one
        # variable carried through this loop and reject its changed type.
        p_offs = tl.arange(0, FINAL_BLOCK)
        if IS_MAX:
            total = tl.full([FINAL_BLOCK], float("-inf"), tl.float32)
        else:
            total = tl.zeros([FINAL_BLOCK], tl.float32)
        j = 0
        while j < num_programs:  # (see _final_kernel for why not tl.range)
            p_idx = j + p_offs
            p_ok = p_idx < num_programs
            if IS_MAX:
                p_val = tl.load(part_ptr + p_idx, mask=p_ok, other=float("-inf"), cache_modifier=".cg")
                total = tl.maximum(total, p_val, propagate_nan=tl.PropagateNan.ALL)
            else:
                total += tl.load(part_ptr + p_idx, mask=p_ok, other=0.0, cache_modifier=".cg")
            j += FINAL_BLOCK
        tl.store(out_ptr, _fold_block(total, IS_MAX).to(out_ptr.dtype.element_ty))


@triton.jit
def _final_kernel(in_ptr, out_ptr, m, IS_MAX: tl.constexpr, BLOCK: tl.constexpr):
    """One program folds m values (the input itself or the fp32 partials) in index order."""
    offs = tl.arange(0, BLOCK).to(tl.int64)
    if IS_MAX:
        acc = tl.full([BLOCK], float("-inf"), tl.float32)
    else:
        acc = tl.zeros([BLOCK], tl.float32)
    # A while loop, not tl.range: the interpreter cannot take a runtime scalar as a range bound.
    start = 0
    while start < m:
        idx = start + offs
        acc = _fold_tile(acc, in_ptr, idx, idx < m, IS_MAX)
        start += BLOCK
    tl.store(out_ptr, _fold_block(acc, IS_MAX).to(out_ptr.dtype.element_ty))


@triton.jit
def _rows_kernel(x_ptr, out_ptr, rows, cols, IS_MAX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    row_ok = r < rows
    base = x_ptr + r[:, None] * cols
    if IS_MAX:
        acc = tl.full([BLOCK_R, BLOCK_C], float("-inf"), tl.float32)
    else:
        acc = tl.zeros([BLOCK_R, BLOCK_C], tl.float32)
    start = 0
    while start < cols:  # (see _final_kernel for why not tl.range)
        cc = start + c
        acc = _fold_tile(acc, base, cc[None, :], row_ok[:, None] & (cc[None, :] < cols), IS_MAX)
        start += BLOCK_C
    if IS_MAX:
        res = tl.reduce(acc, 1, _max_nan)
    else:
        res = tl.sum(acc, 1)
    tl.store(out_ptr + r, res.to(out_ptr.dtype.element_ty), mask=row_ok)


def _reduce(op: str, x: torch.Tensor, dim, is_max: bool) -> torch.Tensor:
    check_dim_type(op, dim)
    whole = check_input(op, x, is_max, dim)
    # The interpreter (TRITON_INTERPRET=1) runs on CPU tensors; compiled kernels need the GPU.
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"{op}: argument 'x' must be a CUDA tensor, got a tensor on {x.device}")
    out = torch.empty(out_shape(x, whole), dtype=x.dtype, device=x.device)
    if whole:
        n = x.numel()
        if n == 0:
            return out.zero_()
        chunk = _BLOCK * _CHUNK_TILES
        if n <= chunk:
            _final_kernel[(1,)](x, out, n, IS_MAX=is_max, BLOCK=_BLOCK, num_warps=8)
            return out
        num_programs = triton.cdiv(n, chunk)
        # [ticket counter | fp32 partials], zeroed in one fill: the counter must start at 0.
        ws = torch.zeros(num_programs + 1, dtype=torch.int32, device=x.device)
        partials = ws[1:].view(torch.float32)
        _full_kernel[(num_programs,)](x, partials, ws, out, n, num_programs, IS_MAX=is_max, BLOCK=_BLOCK,
                                      TILES=_CHUNK_TILES, FINAL_BLOCK=_FINAL_BLOCK, num_warps=8)
        return out
    cols = x.shape[-1]
    rows = out.numel()
    if rows == 0:
        return out
    if cols == 0:
        return out.zero_()
    # Tiles of about 4K elements: whole short rows several to a program, long rows in column steps.
    block_c = min(triton.next_power_of_2(cols), 4096)
    block_r = max(1, min(4096 // block_c, triton.next_power_of_2(rows)))
    _rows_kernel[(triton.cdiv(rows, block_r),)](x, out, rows, cols, IS_MAX=is_max, BLOCK_R=block_r,
                                                 BLOCK_C=block_c, num_warps=8 if block_c * block_r >= 4096 else 4)
    return out


def reduce_sum(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Triton twin of flashkernel.reduce_sum."""
    return _reduce("flashkernel.triton.reduce_sum", x, dim, False)


def reduce_max(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Triton twin of flashkernel.reduce_max."""
    return _reduce("flashkernel.triton.reduce_max", x, dim, True)
