"""Triton twin of flash_attention: same signature and semantics as flashkernel.flash_attention.

One program owns BLOCK_M query rows of one (batch, head) and streams key/value tiles of BLOCK_N
through an online softmax (running max and sum in fp32, exp2 with the scale folded in). Key tiles
that need no mask (fully below the causal diagonal and inside Nk) run a mask-free loop; only the
diagonal and tail tiles pay for the per-element mask. Autotuned over block sizes, warps and
stages on the GPU (with FLASHKERNEL_TRITON_AUTOTUNE=0: one fixed configuration per head_dim, see
_autotune.py); under TRITON_INTERPRET=1 one small configuration runs on the CPU.
`flash_attention_with_config` runs one given configuration of CONFIGS (how the tests cover each).
"""
from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from flashkernel.ops.attention import check_arguments
from flashkernel.triton._autotune import TunedLauncher, autotune_enabled

_OP = "flashkernel.triton.flash_attention"
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


@triton.jit
def _attn_step(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, start_n, n_k, diag, qk_scale,
               CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST_DOTS: tl.constexpr = False):
    n = start_n + tl.arange(0, BLOCK_N)
    if MASKED:
        k = tl.load(k_base + n[None, :] * stride_kn + offs_d[:, None], mask=n[None, :] < n_k, other=0.0)
        v = tl.load(v_base + n[:, None] * stride_vn + offs_d[None, :], mask=n[:, None] < n_k, other=0.0)
    else:
        k = tl.load(k_base + n[None, :] * stride_kn + offs_d[:, None])
        v = tl.load(v_base + n[:, None] * stride_vn + offs_d[None, :])
    if UPCAST_DOTS:
        # The CPU interpreter's tl.dot mishandles bfloat16 operands; products of 16-bit values are
        # exact in fp32, so upcasting first gives the same result.
        s = tl.dot(q.to(tl.float32), k.to(tl.float32)) * qk_scale
    else:
        s = tl.dot(q, k) * qk_scale
    if MASKED:
        keep = n[None, :] < n_k
        if CAUSAL:
            keep = keep & (n[None, :] <= offs_m[:, None] + diag)
        s = tl.where(keep, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row that has seen only masked keys keeps max -inf: subtract 0 so exp2 gives 0, not NaN.
    base = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - base)
    p = tl.math.exp2(s - base[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    if UPCAST_DOTS:
        acc = tl.dot(p.to(v.dtype).to(tl.float32), v.to(tl.float32), acc)
    else:
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_new, l_i


@triton.jit
def _attn_tiles(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, lo, hi, n_k, diag,
                qk_scale, CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        acc, m_i, l_i = _attn_step(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, start_n,
                                   n_k, diag, qk_scale, CAUSAL, MASKED, BLOCK_N)
    return acc, m_i, l_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
              stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om, heads_q, group, n_q, n_k,
              qk_scale, SHAPE_BUCKET, HEAD_DIM: tl.constexpr, CAUSAL: tl.constexpr, RETURN_LSE: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, INTERPRET: tl.constexpr = False,
              STATIC_TILES: tl.constexpr = 0):
    # Reversed so causal programs with the most key tiles start first.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // heads_q
    h = pid_bh % heads_q
    hk = h // group
    m_start = pid_m * BLOCK_M
    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    k_base = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
    q = tl.load(q_base + offs_m[:, None].to(tl.int64) * stride_qm + offs_d[None, :], mask=offs_m[:, None] < n_q,
                other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    diag = n_k - n_q  # causal: query i sees keys j <= i + diag
    if INTERPRET:
        # The CPU interpreter (only it sets INTERPRET) cannot take loop bounds computed from program_id (they are 1-element
        # arrays there), so it walks all STATIC_TILES = cdiv(n_k, BLOCK_N) key tiles with the mask on: tiles past the causal
        # diagonal are then fully masked and add exactly nothing (p = 0, alpha = 1).
        for it in range(STATIC_TILES):
            acc, m_i, l_i = _attn_step(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d,
                                       it * BLOCK_N, n_k, diag, qk_scale, CAUSAL, True, BLOCK_N, True)
    else:
        # Plain scalar branches rather than tl.minimum/tl.maximum: scalars stay scalars under the
        # interpreter too.
        hi = n_k
        full = n_k
        if CAUSAL:
            hi = m_start + BLOCK_M + diag
            if hi > n_k:
                hi = n_k
            # Tiles entirely at or below the first row's diagonal and inside n_k need no mask.
            full = m_start + diag + 1
            if full > n_k:
                full = n_k
        if hi < 0:
            hi = 0
        if full < 0:
            full = 0
        full = full // BLOCK_N * BLOCK_N
        acc, m_i, l_i = _attn_tiles(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, 0, full,
                                    n_k, diag, qk_scale, CAUSAL, False, BLOCK_N)
        acc, m_i, l_i = _attn_tiles(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, full, hi,
                                    n_k, diag, qk_scale, CAUSAL, True, BLOCK_N)

    # l == 0 only for a row that sees no key: output 0 and lse -inf by definition.
    seen = l_i > 0.0
    safe_l = tl.where(seen, l_i, 1.0)
    inv = tl.where(seen, 1.0 / safe_l, 0.0)
    out = acc * inv[:, None]
    o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    tl.store(o_base + offs_m[:, None].to(tl.int64) * stride_om + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=offs_m[:, None] < n_q)
    if RETURN_LSE:
        lse = tl.where(seen, (m_i + tl.math.log2(safe_l)) * 0.6931471805599453, float("-inf"))
        tl.store(LSE + pid_bh.to(tl.int64) * n_q + offs_m, lse, mask=offs_m < n_q)


CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
]
# Tuned once per (head_dim, causal, dtype, shape bucket), not per exact shape: each tuning compiles
# every configuration, and the best tile barely moves within a bucket (see _shape_bucket).
_attn_fwd_tuned = triton.autotune(configs=CONFIGS, key=["SHAPE_BUCKET", "HEAD_DIM", "CAUSAL", "RETURN_LSE"])(_attn_fwd)
_launch_tuned = TunedLauncher(_attn_fwd_tuned)
# Without autotuning (FLASHKERNEL_TRITON_AUTOTUNE=0): one configuration per head_dim.
FIXED_CONFIGS = {64: CONFIGS[0], 128: CONFIGS[2]}


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _shape_bucket(device: torch.device, batch: int, heads_q: int, n_q: int, n_k: int) -> int:
    """The autotuning bucket of a shape: short or long keys (< 2048 or not), and whether the grid
    of 128-row tiles fills the GPU 4 times over. A small grid (B=1, H=8, N=4096: 256 tiles on 132
    SMs) wants 64-row tiles that a large one does not, so the two must not share a tuning."""
    if device.type != "cuda":
        return 0
    small_grid = batch * heads_q * triton.cdiv(n_q, 128) < 4 * _sm_count(device.index)
    return (0 if n_k < 2048 else 1) + (2 if small_grid else 0)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None, return_lse: bool = False):
    """Same contract as flashkernel.flash_attention (see there)."""
    return _forward(q, k, v, causal, scale, return_lse, None)


def flash_attention_with_config(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: triton.Config, *,
                                causal: bool = False, scale: float | None = None, return_lse: bool = False):
    """flash_attention with the given configuration (one of CONFIGS) instead of the autotuner's
    choice. Under TRITON_INTERPRET=1 its block sizes run on the interpreter's path."""
    return _forward(q, k, v, causal, scale, return_lse, config)


def _forward(q, k, v, causal, scale, return_lse, config):
    check_arguments(_OP, q, k, v)
    devices = {q.device, k.device, v.device}
    if len(devices) != 1:
        raise ValueError(f"{_OP}: arguments 'q', 'k' and 'v' must be on the same device, got {sorted(map(str, devices))}")
    if q.device.type != "cuda" and not _interpreting():
        raise ValueError(f"{_OP}: argument 'q' must be a CUDA tensor, got a tensor on {q.device}")
    sc = 1.0 / math.sqrt(q.shape[3]) if scale is None else float(scale)
    if not math.isfinite(sc):
        raise ValueError(f"{_OP}: argument 'scale' must be finite, got {sc}")
    batch, heads_q, n_q, d = q.shape
    heads_kv, n_k = k.shape[1], k.shape[2]
    out = torch.empty_like(q, memory_format=torch.contiguous_format)  # half the host time of torch.empty here
    lse = torch.empty((batch, heads_q, n_q), dtype=torch.float32, device=q.device) if return_lse else None
    if out.numel() > 0:
        bucket = _shape_bucket(q.device, batch, heads_q, n_q, n_k)
        args = (q, k, v, out, lse if return_lse else out, q.stride(0), q.stride(1), q.stride(2), k.stride(0),
                k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1),
                out.stride(2), heads_q, heads_q // heads_kv, n_q, n_k, sc * _LOG2E, bucket)
        flags = dict(HEAD_DIM=d, CAUSAL=bool(causal), RETURN_LSE=bool(return_lse))
        if _interpreting():
            # Only the block sizes matter on the CPU; the interpreter's path walks every key tile.
            blocks = {"BLOCK_M": 16, "BLOCK_N": 16} if config is None else \
                {"BLOCK_M": config.kwargs["BLOCK_M"], "BLOCK_N": config.kwargs["BLOCK_N"]}
            grid = (triton.cdiv(n_q, blocks["BLOCK_M"]), batch * heads_q)
            _attn_fwd[grid](*args, **flags, **blocks, INTERPRET=True,
                            STATIC_TILES=triton.cdiv(n_k, blocks["BLOCK_N"]))
        elif config is None and autotune_enabled():
            def grid(meta):
                return (triton.cdiv(n_q, meta["BLOCK_M"]), batch * heads_q)

            _launch_tuned((q.device.index, q.dtype, bucket, d, bool(causal), bool(return_lse)), grid, *args, **flags)
        else:
            meta = (config or FIXED_CONFIGS[d]).all_kwargs()
            grid = (triton.cdiv(n_q, meta["BLOCK_M"]), batch * heads_q)
            _attn_fwd[grid](*args, **flags, **meta)
    return (out, lse) if return_lse else out
