"""Triton twin of flash_attention and flash_attention_varlen: same signatures and semantics as
flashkernel.flash_attention / flashkernel.flash_attention_varlen.

One program owns BLOCK_M query rows of one (batch, head) and streams key/value tiles of BLOCK_N
through an online softmax (running max and sum in fp32, exp2 with the scale folded in). Key tiles
that need no mask (inside Nk and inside the causal diagonal / window for every row of the block)
run a mask-free loop; only the boundary tiles pay for the per-element mask, and tiles outside the
window are never visited. Head dims that are not a power of two (80, 96) run padded to the next
one with masked loads and stores. Windows, soft-capping, padded head dims and the packed (varlen)
layout are compile-time flags, so the plain kernel is the one it always was. Autotuned over block
sizes, warps and stages on the GPU (with FLASHKERNEL_TRITON_AUTOTUNE=0: one fixed configuration
per head_dim, see _autotune.py); under TRITON_INTERPRET=1 one small configuration runs on the CPU.
`flash_attention_with_config` / `flash_attention_varlen_with_config` run one given configuration
of `configs_for_head_dim(d)` (how the tests cover each).
"""
from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from flashkernel.ops.attention import check_arguments, check_varlen_arguments, check_varlen_values, window_and_softcap
from flashkernel.triton._autotune import TunedLauncher, autotune_enabled

_OP = "flashkernel.triton.flash_attention"
_OP_VARLEN = "flashkernel.triton.flash_attention_varlen"
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


@triton.jit
def _attn_step(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, start_n, n_k, left_edge,
               right_edge, qk_scale, softcap_log2, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
               BOUND_LEFT: tl.constexpr, BOUND_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, MASKED: tl.constexpr,
               BLOCK_N: tl.constexpr, UPCAST_DOTS: tl.constexpr = False):
    n = start_n + tl.arange(0, BLOCK_N)
    if MASKED:
        k_ok = n[None, :] < n_k
        v_ok = n[:, None] < n_k
        if HEAD_DIM_PAD != HEAD_DIM:
            k_ok = k_ok & (offs_d[:, None] < HEAD_DIM)
            v_ok = v_ok & (offs_d[None, :] < HEAD_DIM)
        k = tl.load(k_base + n[None, :] * stride_kn + offs_d[:, None], mask=k_ok, other=0.0)
        v = tl.load(v_base + n[:, None] * stride_vn + offs_d[None, :], mask=v_ok, other=0.0)
    elif HEAD_DIM_PAD != HEAD_DIM:
        k = tl.load(k_base + n[None, :] * stride_kn + offs_d[:, None], mask=offs_d[:, None] < HEAD_DIM, other=0.0)
        v = tl.load(v_base + n[:, None] * stride_vn + offs_d[None, :], mask=offs_d[None, :] < HEAD_DIM, other=0.0)
    else:
        k = tl.load(k_base + n[None, :] * stride_kn + offs_d[:, None])
        v = tl.load(v_base + n[:, None] * stride_vn + offs_d[None, :])
    if UPCAST_DOTS:
        # The CPU interpreter's tl.dot mishandles bfloat16 operands; products of 16-bit values are
        # exact in fp32, so upcasting first gives the same result.
        s = tl.dot(q.to(tl.float32), k.to(tl.float32))
    else:
        s = tl.dot(q, k)
    if SOFTCAP:
        # c * tanh(scale * s / c) in the log2 domain: tanh(x) = 1 - 2 / (1 + e^(2x)), with
        # qk_scale = 2 * scale * log2(e) / c and softcap_log2 = c * log2(e). Saturates to +-1
        # (exp2 -> inf or 0) instead of overflowing.
        s = (1.0 - 2.0 / (1.0 + tl.math.exp2(s * qk_scale))) * softcap_log2
    else:
        s = s * qk_scale
    if MASKED:
        keep = n[None, :] < n_k
        if BOUND_RIGHT:  # causal or a right window: key j <= i + right_edge
            keep = keep & (n[None, :] <= offs_m[:, None] + right_edge)
        if BOUND_LEFT:  # left window: key j >= i + left_edge
            keep = keep & (n[None, :] >= offs_m[:, None] + left_edge)
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
def _attn_tiles(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, lo, hi, n_k, left_edge,
                right_edge, qk_scale, softcap_log2, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                BOUND_LEFT: tl.constexpr, BOUND_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, MASKED: tl.constexpr,
                BLOCK_N: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        acc, m_i, l_i = _attn_step(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, start_n,
                                   n_k, left_edge, right_edge, qk_scale, softcap_log2, HEAD_DIM, HEAD_DIM_PAD,
                                   BOUND_LEFT, BOUND_RIGHT, SOFTCAP, MASKED, BLOCK_N)
    return acc, m_i, l_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, CU_SEQLENS_Q, CU_SEQLENS_K, stride_qb, stride_qh, stride_qm, stride_kb, stride_kh,
              stride_kn, stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om, stride_lse_h, heads_q,
              group, n_q, n_k, qk_scale, softcap_log2, window_left, window_right, SHAPE_BUCKET,
              HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BOUND_LEFT: tl.constexpr,
              BOUND_RIGHT: tl.constexpr, SOFTCAP: tl.constexpr, VARLEN: tl.constexpr, RETURN_LSE: tl.constexpr,
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
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    if VARLEN:
        # Sequence b's rows of the packed tensors; the grid covers the longest sequence, so the
        # programs past this one's end have nothing to do.
        q_start = tl.load(CU_SEQLENS_Q + b)
        n_q = tl.load(CU_SEQLENS_Q + b + 1) - q_start
        k_start = tl.load(CU_SEQLENS_K + b)
        n_k = tl.load(CU_SEQLENS_K + b + 1) - k_start
        if m_start >= n_q:
            return
        q_base = Q + q_start.to(tl.int64) * stride_qm + h.to(tl.int64) * stride_qh
        k_base = K + k_start.to(tl.int64) * stride_kn + hk.to(tl.int64) * stride_kh
        v_base = V + k_start.to(tl.int64) * stride_vn + hk.to(tl.int64) * stride_vh
        o_base = O + q_start.to(tl.int64) * stride_om + h.to(tl.int64) * stride_oh
        lse_base = LSE + h.to(tl.int64) * stride_lse_h + q_start
    else:
        q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        k_base = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
        v_base = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
        o_base = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
        lse_base = LSE + pid_bh.to(tl.int64) * n_q
    if HEAD_DIM_PAD != HEAD_DIM:
        row_ok = (offs_m[:, None] < n_q) & (offs_d[None, :] < HEAD_DIM)
    else:
        row_ok = offs_m[:, None] < n_q
    q = tl.load(q_base + offs_m[:, None].to(tl.int64) * stride_qm + offs_d[None, :], mask=row_ok, other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    diag = n_k - n_q  # query i sits at key position i + diag
    left_edge = diag - window_left  # BOUND_LEFT: query i sees keys j >= i + left_edge
    right_edge = diag + window_right  # BOUND_RIGHT: keys j <= i + right_edge (causal: window_right = 0)

    # Key range [lo, hi) that some row of the block sees; [full_lo, full_hi) the block-aligned part
    # that every row sees whole (no mask). Plain scalar branches rather than tl.minimum/tl.maximum:
    # scalars stay scalars under the interpreter too.
    lo = 0
    full_lo = 0
    hi = n_k
    full_hi = n_k
    if BOUND_RIGHT:
        hi = m_start + BLOCK_M + right_edge  # the last row's rightmost key + 1
        if hi > n_k:
            hi = n_k
        if hi < 0:
            hi = 0
        full_hi = m_start + right_edge + 1  # the first row's rightmost key + 1
        if full_hi > n_k:
            full_hi = n_k
        if full_hi < 0:
            full_hi = 0
    full_hi = full_hi // BLOCK_N * BLOCK_N
    if BOUND_LEFT:
        lo = m_start + left_edge  # the first row's leftmost key
        if lo < 0:
            lo = 0
        lo = lo // BLOCK_N * BLOCK_N
        full_lo = m_start + BLOCK_M - 1 + left_edge  # the last row's leftmost key
        if full_lo < 0:
            full_lo = 0
        full_lo = (full_lo + BLOCK_N - 1) // BLOCK_N * BLOCK_N
        if full_lo > hi:
            full_lo = hi
        if full_hi < full_lo:
            full_hi = full_lo
    # Now lo <= full_lo <= full_hi <= hi: masked [lo, full_lo), mask-free [full_lo, full_hi), masked [full_hi, hi).

    if INTERPRET:
        # The CPU interpreter (only it sets INTERPRET) cannot take loop bounds computed from
        # program_id (they are 1-element arrays there), so it walks all STATIC_TILES =
        # cdiv(max n_k, BLOCK_N) key tiles and applies the same ranges with branches, with the
        # dot operands upcast (see _attn_step).
        for it in range(STATIC_TILES):
            start_n = it * BLOCK_N
            if (start_n >= lo) & (start_n < hi):
                if (start_n >= full_lo) & (start_n < full_hi):
                    acc, m_i, l_i = _attn_step(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m,
                                               offs_d, start_n, n_k, left_edge, right_edge, qk_scale, softcap_log2,
                                               HEAD_DIM, HEAD_DIM_PAD, BOUND_LEFT, BOUND_RIGHT, SOFTCAP, False,
                                               BLOCK_N, True)
                else:
                    acc, m_i, l_i = _attn_step(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m,
                                               offs_d, start_n, n_k, left_edge, right_edge, qk_scale, softcap_log2,
                                               HEAD_DIM, HEAD_DIM_PAD, BOUND_LEFT, BOUND_RIGHT, SOFTCAP, True,
                                               BLOCK_N, True)
    else:
        if BOUND_LEFT:
            acc, m_i, l_i = _attn_tiles(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, lo,
                                        full_lo, n_k, left_edge, right_edge, qk_scale, softcap_log2, HEAD_DIM,
                                        HEAD_DIM_PAD, BOUND_LEFT, BOUND_RIGHT, SOFTCAP, True, BLOCK_N)
        acc, m_i, l_i = _attn_tiles(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, full_lo,
                                    full_hi, n_k, left_edge, right_edge, qk_scale, softcap_log2, HEAD_DIM,
                                    HEAD_DIM_PAD, BOUND_LEFT, BOUND_RIGHT, SOFTCAP, False, BLOCK_N)
        acc, m_i, l_i = _attn_tiles(acc, m_i, l_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, full_hi,
                                    hi, n_k, left_edge, right_edge, qk_scale, softcap_log2, HEAD_DIM, HEAD_DIM_PAD,
                                    BOUND_LEFT, BOUND_RIGHT, SOFTCAP, True, BLOCK_N)

    # l == 0 only for a row that sees no key: output 0 and lse -inf by definition.
    seen = l_i > 0.0
    safe_l = tl.where(seen, l_i, 1.0)
    inv = tl.where(seen, 1.0 / safe_l, 0.0)
    out = acc * inv[:, None]
    tl.store(o_base + offs_m[:, None].to(tl.int64) * stride_om + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=row_ok)
    if RETURN_LSE:
        lse = tl.where(seen, (m_i + tl.math.log2(safe_l)) * 0.6931471805599453, float("-inf"))
        tl.store(lse_base + offs_m, lse, mask=offs_m < n_q)


CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=3),
]
# head_dim 256: the fp32 accumulator alone is BLOCK_M x 256 x 4 bytes, and each pipeline stage
# holds BLOCK_N x 256 x 2 bytes of K and as much of V, so smaller tiles and fewer stages. Compiled
# for sm_90 (Triton 3.6, ptxas): 64x32 with 8 warps spills least (40-64 bytes of stack a thread,
# 64 KiB of shared memory), 64x64 w8 112-352 bytes, 64x64 w4 and 128x64 w8 856-1432 bytes; all
# within the 227 KiB of shared memory an H100/H200 block may use (64-128 KiB).
CONFIGS_D256 = [
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=2),
]


def configs_for_head_dim(d: int) -> list[triton.Config]:
    """The configurations the autotuner tries at head_dim d (80 and 96 run padded to 128)."""
    return CONFIGS_D256 if d > 128 else CONFIGS


# Tuned once per (head_dim, flags, dtype, shape bucket), not per exact shape: each tuning compiles
# every configuration, and the best tile barely moves within a bucket (see _shape_bucket).
_TUNING_KEY = ["SHAPE_BUCKET", "HEAD_DIM", "BOUND_LEFT", "BOUND_RIGHT", "SOFTCAP", "VARLEN", "RETURN_LSE"]
_launch_tuned = TunedLauncher(triton.autotune(configs=CONFIGS, key=_TUNING_KEY)(_attn_fwd))
_launch_tuned_d256 = TunedLauncher(triton.autotune(configs=CONFIGS_D256, key=_TUNING_KEY)(_attn_fwd))
# Without autotuning (FLASHKERNEL_TRITON_AUTOTUNE=0): one configuration per head_dim.
FIXED_CONFIGS = {32: CONFIGS[0], 64: CONFIGS[0], 80: CONFIGS[2], 96: CONFIGS[2], 128: CONFIGS[2],
                 256: CONFIGS_D256[0]}


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
                    scale: float | None = None, window: tuple[int, int] | None = None,
                    softcap: float | None = None, return_lse: bool = False):
    """Same contract as flashkernel.flash_attention (see there), without `backend`."""
    return _forward(q, k, v, causal, scale, window, softcap, return_lse, None)


def flash_attention_with_config(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: triton.Config, *,
                                causal: bool = False, scale: float | None = None,
                                window: tuple[int, int] | None = None, softcap: float | None = None,
                                return_lse: bool = False):
    """flash_attention with the given configuration (one of configs_for_head_dim(d)) instead of the
    autotuner's choice. Under TRITON_INTERPRET=1 its block sizes run on the interpreter's path."""
    return _forward(q, k, v, causal, scale, window, softcap, return_lse, config)


def flash_attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                           cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, *,
                           causal: bool = False, scale: float | None = None,
                           window: tuple[int, int] | None = None, softcap: float | None = None,
                           return_lse: bool = False):
    """Same contract as flashkernel.flash_attention_varlen (see there): one launch over
    (cdiv(max_seqlen_q, BLOCK_M), batch * heads), the sequence bounds read on the device."""
    return _forward_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale, window,
                           softcap, return_lse, None)


def flash_attention_varlen_with_config(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                                       cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int,
                                       config: triton.Config, *, causal: bool = False, scale: float | None = None,
                                       window: tuple[int, int] | None = None, softcap: float | None = None,
                                       return_lse: bool = False):
    """flash_attention_varlen with the given configuration, as flash_attention_with_config."""
    return _forward_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale, window,
                           softcap, return_lse, config)


def _check_device_and_scale(op, tensors, d, scale):
    devices = {t.device for t in tensors.values()}
    if len(devices) != 1:
        names = ", ".join(f"'{name}'" for name in tensors)
        raise ValueError(f"{op}: arguments {names} must be on the same device, got {sorted(map(str, devices))}")
    device = next(iter(devices))
    if device.type != "cuda" and not _interpreting():
        raise ValueError(f"{op}: argument 'q' must be a CUDA tensor, got a tensor on {device}")
    sc = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not math.isfinite(sc):
        raise ValueError(f"{op}: argument 'scale' must be finite, got {sc}")
    return sc


def _mask_arguments(causal, sc, left, right, cap):
    """Runtime arguments (qk_scale, softcap_log2, window_left, window_right) and the flags that
    select the kernel's compile-time paths."""
    bound_right = bool(causal) or right >= 0
    if cap > 0.0:
        qk_scale, softcap_log2 = 2.0 * sc * _LOG2E / cap, cap * _LOG2E
    else:
        qk_scale, softcap_log2 = sc * _LOG2E, 0.0
    runtime = (qk_scale, softcap_log2, max(left, 0), 0 if causal else max(right, 0))
    flags = dict(BOUND_LEFT=left >= 0, BOUND_RIGHT=bound_right, SOFTCAP=cap > 0.0)
    return runtime, flags


def _launch(args, flags, d, device, dtype, rows, keys, batch_heads, bucket, config):
    """Launches _attn_fwd over (cdiv(rows, BLOCK_M), batch_heads): autotuned, with `config`, or
    with the fixed configuration of d; under the interpreter with its small blocks."""
    flags = dict(flags, HEAD_DIM=d, HEAD_DIM_PAD=triton.next_power_of_2(d))
    if _interpreting():
        # Only the block sizes matter on the CPU; the interpreter's path branches over every key tile.
        blocks = {"BLOCK_M": 16, "BLOCK_N": 16} if config is None else \
            {"BLOCK_M": config.kwargs["BLOCK_M"], "BLOCK_N": config.kwargs["BLOCK_N"]}
        grid = (triton.cdiv(rows, blocks["BLOCK_M"]), batch_heads)
        _attn_fwd[grid](*args, **flags, **blocks, INTERPRET=True, STATIC_TILES=triton.cdiv(keys, blocks["BLOCK_N"]))
    elif config is None and autotune_enabled():
        def grid(meta):
            return (triton.cdiv(rows, meta["BLOCK_M"]), batch_heads)

        launcher = _launch_tuned_d256 if d > 128 else _launch_tuned
        key = (device.index, dtype, bucket, d) + tuple(flags[name] for name in _TUNING_KEY[2:])
        launcher(key, grid, *args, **flags)
    else:
        meta = (config or FIXED_CONFIGS[d]).all_kwargs()
        grid = (triton.cdiv(rows, meta["BLOCK_M"]), batch_heads)
        _attn_fwd[grid](*args, **flags, **meta)


def _forward(q, k, v, causal, scale, window, softcap, return_lse, config):
    left, right, cap = window_and_softcap(_OP, window, softcap)
    check_arguments(_OP, q, k, v)
    sc = _check_device_and_scale(_OP, {"q": q, "k": k, "v": v}, q.shape[3], scale)
    batch, heads_q, n_q, d = q.shape
    heads_kv, n_k = k.shape[1], k.shape[2]
    out = torch.empty_like(q, memory_format=torch.contiguous_format)  # half the host time of torch.empty here
    lse = torch.empty((batch, heads_q, n_q), dtype=torch.float32, device=q.device) if return_lse else None
    if out.numel() > 0:
        runtime, flags = _mask_arguments(causal, sc, left, right, cap)
        bucket = _shape_bucket(q.device, batch, heads_q, n_q, n_k)
        args = (q, k, v, out, lse if return_lse else out, None, None, q.stride(0), q.stride(1), q.stride(2),
                k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), out.stride(0),
                out.stride(1), out.stride(2), n_q, heads_q, heads_q // heads_kv, n_q, n_k, *runtime, bucket)
        flags = dict(flags, VARLEN=False, RETURN_LSE=bool(return_lse))
        _launch(args, flags, d, q.device, q.dtype, n_q, n_k, batch * heads_q, bucket, config)
    return (out, lse) if return_lse else out


def _forward_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, scale, window, softcap,
                    return_lse, config):
    left, right, cap = window_and_softcap(_OP_VARLEN, window, softcap)
    check_varlen_arguments(_OP_VARLEN, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    sc = _check_device_and_scale(_OP_VARLEN, {"q": q, "k": k, "v": v, "cu_seqlens_q": cu_seqlens_q,
                                              "cu_seqlens_k": cu_seqlens_k}, q.shape[2], scale)
    check_varlen_values(_OP_VARLEN, q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    total_q, heads_q, d = q.shape
    heads_kv = k.shape[1]
    batch = cu_seqlens_q.numel() - 1
    max_seqlen_q, max_seqlen_k = int(max_seqlen_q), int(max_seqlen_k)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((heads_q, total_q), dtype=torch.float32, device=q.device) if return_lse else None
    if out.numel() > 0 and batch > 0 and max_seqlen_q > 0:
        runtime, flags = _mask_arguments(causal, sc, left, right, cap)
        bucket = _shape_bucket(q.device, batch, heads_q, max_seqlen_q, max_seqlen_k)
        args = (q, k, v, out, lse if return_lse else out, cu_seqlens_q, cu_seqlens_k, 0, q.stride(1), q.stride(0),
                0, k.stride(1), k.stride(0), 0, v.stride(1), v.stride(0), 0, out.stride(1), out.stride(0), total_q,
                heads_q, heads_q // heads_kv, 0, 0, *runtime, bucket)
        flags = dict(flags, VARLEN=True, RETURN_LSE=bool(return_lse))
        _launch(args, flags, d, q.device, q.dtype, max_seqlen_q, max_seqlen_k, batch * heads_q, bucket, config)
    else:  # no sequence has a query row: rows outside every sequence (total_q > cu_seqlens_q[-1]) stay zero
        out.zero_()
        if return_lse:
            lse.fill_(float("-inf"))
    return (out, lse) if return_lse else out
