"""Pure-PyTorch attention references for the tests of flash_attention and flash_attention_varlen
(the CUDA op and its Triton twin), and random packed (varlen) batches to feed them.

Semantics (FlashAttention's): query row i of a sequence with Nq queries and Nk keys sits at key
position i + Nk - Nq (bottom-right alignment). causal: it sees keys j <= i + Nk - Nq.
window=(left, right): keys i + Nk - Nq - left <= j <= i + Nk - Nq + right, a negative bound meaning
unbounded on that side; causal sets right to 0. softcap=c > 0: each scaled score s = scale * q.k
becomes c * tanh(s / c) before the softmax (the masks apply after). A row that sees no key has
output 0 and LSE -inf; LSE is the natural log of the row's sum of exp of its final scores.

`dtype=torch.float64` (the default) is the accurate reference. `dtype=q.dtype` is PyTorch's own
low-precision math (q k^T and P V in fp16/bf16, scale/softcap/softmax in fp32, P rounded to the
input dtype): its error against the accurate reference sets the tolerance of the 2x rule
(helpers.assert_within_torch_error).
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import torch

__all__ = ["visible_keys", "reference_attention", "reference_attention_varlen", "make_varlen_batch",
           "VARLEN_LENGTHS"]

# Sequence lengths a varlen batch mixes: empty, single-token, odd and tile-straddling sizes.
VARLEN_LENGTHS = (0, 1, 7, 16, 17, 33, 127)


def visible_keys(n_q: int, n_k: int, *, causal: bool = False, window: tuple[int, int] | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Bool [n_q, n_k]: True where query row i may see key j (bottom-right aligned)."""
    left, right = (-1, -1) if window is None else (int(window[0]), int(window[1]))
    if causal:
        right = 0
    i = torch.arange(n_q, device=device)[:, None] + (n_k - n_q)  # the row's key position
    j = torch.arange(n_k, device=device)[None, :]
    keep = torch.ones(n_q, n_k, dtype=torch.bool, device=device)
    if right >= 0:
        keep &= j <= i + right
    if left >= 0:
        keep &= j >= i - left
    return keep


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                        scale: float | None = None, window: tuple[int, int] | None = None,
                        softcap: float | None = None, dtype: torch.dtype = torch.float64):
    """Materialized attention: q [B, Hq, Nq, d], k and v [B, Hkv, Nk, d] with Hq % Hkv == 0 (the
    key/value heads are repeated for GQA). Returns (out [B, Hq, Nq, d], lse [B, Hq, Nq]): out in
    `dtype` (float64 by default), lse in float64 (float32 for a low-precision `dtype`)."""
    low_precision = dtype in (torch.float16, torch.bfloat16)
    stats = torch.float32 if low_precision else torch.float64
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    group = q.shape[1] // k.shape[1]
    qq = q.to(dtype)
    kk = k.to(dtype).repeat_interleave(group, dim=1)
    vv = v.to(dtype).repeat_interleave(group, dim=1)
    s = (qq @ kk.transpose(-1, -2)).to(stats) * scale
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    keep = visible_keys(q.shape[2], k.shape[2], causal=causal, window=window, device=q.device)
    s = s.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)  # -inf for a row that sees no key
    blind = torch.isneginf(lse)
    p = torch.exp(s - torch.where(blind, 0.0, lse)[..., None])  # exp(-inf) = 0 on blind rows
    out = p.to(dtype) @ vv
    return out, lse


def _split(t: torch.Tensor, cu: Sequence[int], b: int) -> torch.Tensor:
    """Sequence b of a packed [total, H, d] tensor as [1, H, n, d]."""
    return t[cu[b]:cu[b + 1]].transpose(0, 1).unsqueeze(0)


def reference_attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                               cu_seqlens_k: torch.Tensor, *, causal: bool = False, scale: float | None = None,
                               window: tuple[int, int] | None = None, softcap: float | None = None,
                               dtype: torch.dtype = torch.float64):
    """reference_attention per sequence of a packed batch: q [total_q, Hq, d], k and v
    [total_k, Hkv, d], cu_seqlens_* [B + 1] (any integer dtype and device). Returns
    (out [total_q, Hq, d], lse [Hq, total_q]) in the dtypes of reference_attention."""
    cu_q = [int(x) for x in cu_seqlens_q.tolist()]
    cu_k = [int(x) for x in cu_seqlens_k.tolist()]
    low_precision = dtype in (torch.float16, torch.bfloat16)
    stats = torch.float32 if low_precision else torch.float64
    out = torch.zeros(q.shape, dtype=dtype, device=q.device)
    lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), dtype=stats, device=q.device)
    for b in range(len(cu_q) - 1):
        if cu_q[b + 1] == cu_q[b]:
            continue
        o, l = reference_attention(_split(q, cu_q, b), _split(k, cu_k, b), _split(v, cu_k, b), causal=causal,
                                   scale=scale, window=window, softcap=softcap, dtype=dtype)
        out[cu_q[b]:cu_q[b + 1]] = o[0].transpose(0, 1)
        lse[:, cu_q[b]:cu_q[b + 1]] = l[0]
    return out, lse


def make_varlen_batch(seqlens_q: Sequence[int], seqlens_k: Sequence[int] | None = None, *, heads_q: int = 2,
                      heads_kv: int | None = None, head_dim: int = 64, dtype: torch.dtype = torch.float16,
                      device: torch.device | str = "cuda", seed: int | None = None, scale: float = 1.0):
    """A random packed batch: sequence b has seqlens_q[b] queries and seqlens_k[b] keys (same as
    the queries when seqlens_k is None). q and k are N(0, scale^2), v is N(0, 1). A fresh seed
    each call unless `seed` is given. Returns (q [total_q, Hq, d], k, v [total_k, Hkv, d],
    cu_seqlens_q, cu_seqlens_k (int32 [B + 1] on `device`), max_seqlen_q, max_seqlen_k)."""
    seqlens_k = list(seqlens_q) if seqlens_k is None else list(seqlens_k)
    seqlens_q = list(seqlens_q)
    if len(seqlens_q) != len(seqlens_k):
        raise ValueError(f"seqlens_q and seqlens_k must have the same length, got {len(seqlens_q)} and "
                         f"{len(seqlens_k)}")
    heads_kv = heads_q if heads_kv is None else heads_kv
    g = torch.Generator()
    g.manual_seed(int.from_bytes(os.urandom(4), "little") if seed is None else seed)

    def randn(rows, heads, s):
        return (torch.randn((rows, heads, head_dim), generator=g) * s).to(dtype=dtype, device=device)

    total_q, total_k = sum(seqlens_q), sum(seqlens_k)
    q, k, v = randn(total_q, heads_q, scale), randn(total_k, heads_kv, scale), randn(total_k, heads_kv, 1.0)

    def cumulative(lengths):
        return torch.tensor([0] + lengths, dtype=torch.int64).cumsum(0).to(dtype=torch.int32, device=device)

    return (q, k, v, cumulative(seqlens_q), cumulative(seqlens_k), max(seqlens_q, default=0),
            max(seqlens_k, default=0))
