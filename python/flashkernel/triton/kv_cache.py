"""Triton twins of the paged KV cache's kernels: the append (rows to their slots, an FP8 pool's
values quantized), the gather (one sequence's pages -> contiguous K
and V; an FP8 cache's e4m3 values dequantized: scale * value in fp32, rounded once, as the CUDA
kernel does), decode attention through the page table (split-KV, merged by log-sum-exp), and
prefill attention (the gather path)."""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _kv_head_tile(heads, n_tokens, D: tl.constexpr, BLOCK_T: tl.constexpr):
    """The program's tile in a (token blocks, 2 * heads) grid over one head's K or V rows: kv (0 K,
    1 V), the head, its BLOCK_T token indices, the D column indices, and which tokens exist."""
    kvh = tl.program_id(1)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    return kvh // heads, kvh % heads, t, tl.arange(0, D), t < n_tokens


@triton.jit
def _kv_head_scale(k_scale_ptr, v_scale_ptr, kv, h):
    """An FP8 pool's scale of head h of K (kv 0) or V; the pointers are this layer's [heads] scales."""
    if kv == 0:
        scale = tl.load(k_scale_ptr + h)
    else:
        scale = tl.load(v_scale_ptr + h)
    return scale


@triton.jit
def _gather_kernel(pool_ptr, pages_ptr, k_out, v_out, length, layer_off, page_elems, heads, k_scale_ptr, v_scale_ptr,
                   PAGE_SIZE: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr, QUANTIZED: tl.constexpr):
    # grid: (token blocks, 2 * heads); one program copies a [BLOCK_T, D] tile of one head's K or V.
    kv, h, t, d, mask = _kv_head_tile(heads, length, D, BLOCK_T)
    page = tl.load(pages_ptr + t // PAGE_SIZE, mask=mask, other=0).to(tl.int64)
    row = (kv * heads + h) * PAGE_SIZE + t % PAGE_SIZE
    src = pool_ptr + layer_off + page[:, None] * page_elems + row.to(tl.int64)[:, None] * D + d[None, :]
    tile = tl.load(src, mask=mask[:, None], other=0.0)
    if QUANTIZED:
        tile = (tile.to(tl.float32) * _kv_head_scale(k_scale_ptr, v_scale_ptr, kv, h)).to(k_out.dtype.element_ty)
    dst_off = (h * length + t).to(tl.int64)[:, None] * D + d[None, :]
    if kv == 0:
        tl.store(k_out + dst_off, tile, mask=mask[:, None])
    else:
        tl.store(v_out + dst_off, tile, mask=mask[:, None])


def _check_pool(op: str, pool: torch.Tensor) -> None:
    if pool.dim() != 6 or pool.shape[2] != 2:
        raise ValueError(f"{op}: argument 'pool' must be [num_layers, num_pages, 2, num_kv_heads, page_size, "
                         f"head_dim], got shape {tuple(pool.shape)}")
    if not pool.is_contiguous():
        raise ValueError(f"{op}: argument 'pool' must be contiguous")


def _check_fp8_scales(op: str, pool: torch.Tensor, k_scale, v_scale) -> None:
    """A float8_e4m3fn pool's float32 [num_layers, num_kv_heads] scales."""
    for name, t in (("k_scale", k_scale), ("v_scale", v_scale)):
        if t is None or t.dtype != torch.float32 or tuple(t.shape) != (pool.shape[0], pool.shape[3]):
            raise ValueError(f"{op}: argument '{name}' must be a float32 tensor [num_layers, num_kv_heads] = "
                             f"{[pool.shape[0], pool.shape[3]]} for a float8_e4m3fn pool")


def _layer_scales(k_scale, v_scale, layer: int, device, placeholder: torch.Tensor):
    """The kernels' scale pointers: an FP8 pool's [num_kv_heads] scales of `layer` on `device`, or for
    a 16-bit pool (k_scale None) the placeholder twice, a tensor on the device that QUANTIZED=False
    never reads."""
    if k_scale is None:
        return placeholder, placeholder
    return k_scale[layer].contiguous().to(device), v_scale[layer].contiguous().to(device)


def gather_pages(pool: torch.Tensor, layer: int, pages: torch.Tensor, length: int, k_scale: torch.Tensor | None = None,
                 v_scale: torch.Tensor | None = None, out_dtype: torch.dtype | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Same semantics as torch.ops.flashkernel.kv_cache_gather: pool [num_layers, num_pages, 2,
    num_kv_heads, page_size, head_dim], pages int32 [n] -> K, V [num_kv_heads, length, head_dim].
    A float8_e4m3fn pool needs its float32 [num_layers, num_kv_heads] scales and out_dtype."""
    op = "flashkernel.triton.kv_cache_gather"
    quantized = pool.dtype == torch.float8_e4m3fn
    if quantized:
        if out_dtype not in (torch.float16, torch.bfloat16):
            raise TypeError(f"{op}: argument 'out_dtype' must be torch.float16 or torch.bfloat16 for a "
                            f"float8_e4m3fn pool, got {out_dtype}")
        _check_fp8_scales(op, pool, k_scale, v_scale)
    elif pool.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: argument 'pool' must be float16, bfloat16 or float8_e4m3fn, got {pool.dtype}")
    elif k_scale is not None or v_scale is not None or out_dtype not in (None, pool.dtype):
        raise ValueError(f"{op}: arguments 'k_scale', 'v_scale' and 'out_dtype' are for float8_e4m3fn pools")
    _check_pool(op, pool)
    num_layers, _, _, heads, page_size, d = pool.shape
    if not 0 <= layer < num_layers:
        raise ValueError(f"{op}: argument 'layer' must be in [0, {num_layers}), got {layer}")
    if pages.dtype != torch.int32 or pages.dim() != 1:
        raise TypeError(f"{op}: argument 'pages' must be a 1-D int32 tensor, got {pages.dtype} {tuple(pages.shape)}")
    if not 0 <= length <= pages.numel() * page_size:
        raise ValueError(f"{op}: argument 'length' must be in [0, {pages.numel() * page_size}], got {length}")
    k = torch.empty((heads, length, d), dtype=out_dtype if quantized else pool.dtype, device=pool.device)
    v = torch.empty_like(k)
    if length:
        page_elems = 2 * heads * page_size * d
        block_t = 64
        grid = (triton.cdiv(length, block_t), 2 * heads)
        pages = pages.to(pool.device)
        ks, vs = _layer_scales(k_scale, v_scale, layer, pool.device, pages)
        _gather_kernel[grid](pool, pages, k, v, length, layer * pool.shape[1] * page_elems,
                             page_elems, heads, ks, vs, PAGE_SIZE=page_size, D=d,
                             BLOCK_T=block_t, QUANTIZED=quantized, num_warps=4)
    return k, v


def kv_cache_gather(cache, layer: int, seq_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton twin of flashkernel.kv_cache_gather(cache, layer, seq_id)."""
    layer = int(layer)
    if not 0 <= layer < cache.num_layers:
        raise ValueError(f"flashkernel.triton.kv_cache_gather: argument 'layer' must be in [0, {cache.num_layers}), "
                         f"got {layer}")
    n = cache.seq_len(seq_id, layer)
    pages = torch.tensor(cache.pages(seq_id), dtype=torch.int32)
    if cache.quantized:
        return gather_pages(cache.pool, layer, pages, n, cache.k_scale, cache.v_scale, cache.dtype)
    return gather_pages(cache.pool, layer, pages, n)


def paged_prefill_attention(q: torch.Tensor, cache, layer: int, seq_ids, q_lens, *, scale: float | None = None,
                            window: tuple[int, int] | None = None, softcap: float | None = None) -> torch.Tensor:
    """Triton twin of flashkernel.paged_prefill_attention (same contract): the same packing, the
    Triton varlen attention."""
    from flashkernel.ops.kv_cache import paged_prefill_with
    from flashkernel.triton.attention import flash_attention_varlen
    return paged_prefill_with(flash_attention_varlen, "flashkernel.triton.paged_prefill_attention", q, cache, layer,
                              seq_ids, q_lens, scale=scale, window=window, softcap=softcap)


# ---------------------------------------------------------------- append
@triton.jit
def _e4m3_bits(x):
    """e4m3fn code (as int32 0..255) of fp32 x already clamped to +-448, rounded to nearest even,
    NaN to 0x7F: integer arithmetic on x's bits rather than a conversion instruction, so the CPU
    interpreter (whose fp32 -> e4m3 cast is numpy's, and wrong at some binade edges) and the GPU
    store the same bytes, and those torch's cast stores."""
    bits = x.to(tl.int32, bitcast=True)
    sign = (bits >> 24) & 0x80
    mag = bits & 0x7FFFFFFF
    # Normal (|x| >= 2^-6): keep 3 of the 23 mantissa bits, ties to even; a carry moves into the
    # exponent by itself. Rebias 127 -> 7: subtract 120 << 3 from the (exponent, mantissa) code.
    normal = ((mag + 0x7FFFF + ((mag >> 20) & 1)) >> 20) - (120 << 3)
    # Subnormal: |x| / 2^-9 rounded to nearest even (the 1.5 * 2^23 trick rounds in fp32 itself);
    # 8 is the smallest normal's code, as it should be.
    a = tl.abs(x)
    sub = ((a * 512.0 + 12582912.0) - 12582912.0).to(tl.int32)
    code = tl.where(mag >= 0x3C800000, normal, sub)  # 0x3C800000: 2^-6
    code = tl.where(mag > 0x7F800000, 0x7F, code)  # NaN
    return code | sign


@triton.jit
def _append_kernel(pool_ptr, slots_ptr, k_ptr, v_ptr, k_scale_ptr, v_scale_ptr, n_tokens, layer_off, page_elems,
                   heads, PAGE_SIZE: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr, QUANTIZED: tl.constexpr):
    # grid: (token blocks, 2 * heads); one program writes a [BLOCK_T, D] tile of one head's K or V
    # rows to their slots (slot = page * PAGE_SIZE + row in the page).
    kv, h, t, d, ok = _kv_head_tile(heads, n_tokens, D, BLOCK_T)
    slot = tl.load(slots_ptr + t, mask=ok, other=0).to(tl.int64)
    src_off = (t.to(tl.int64) * heads + h)[:, None] * D + d[None, :]
    if kv == 0:
        rows = tl.load(k_ptr + src_off, mask=ok[:, None], other=0.0)
    else:
        rows = tl.load(v_ptr + src_off, mask=ok[:, None], other=0.0)
    if QUANTIZED:  # e4m3(x / scale) in fp32, saturated to +-448
        x = rows.to(tl.float32) / _kv_head_scale(k_scale_ptr, v_scale_ptr, kv, h)
        x = tl.minimum(tl.maximum(x, -448.0), 448.0)
        rows = _e4m3_bits(x).to(tl.uint8)  # stored into the pool's bytes (pool_ptr: a uint8 view)
    dst = layer_off + (slot // PAGE_SIZE) * page_elems + ((kv * heads + h) * PAGE_SIZE + slot % PAGE_SIZE) * D
    tl.store(pool_ptr + dst[:, None] + d[None, :], rows, mask=ok[:, None])


def append_rows(pool: torch.Tensor, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None) -> None:
    """Same effect as torch.ops.flashkernel.kv_cache_append on checked arguments: row i of k and v
    [n, num_kv_heads, head_dim] (contiguous) to slot slots[i] (int32, page * page_size + row) of
    `layer`; a float8_e4m3fn pool stores e4m3(x / scale) with its [num_layers, num_kv_heads] scales."""
    num_layers, num_pages, _, heads, page_size, d = pool.shape
    n = slots.numel()
    if n == 0:
        return
    quantized = pool.dtype == torch.float8_e4m3fn
    page_elems = 2 * heads * page_size * d
    slots = slots.to(device=pool.device, dtype=torch.int32)
    ks, vs = _layer_scales(k_scale, v_scale, layer, pool.device, slots)
    block_t = 32
    target = pool.view(torch.uint8) if quantized else pool
    _append_kernel[(triton.cdiv(n, block_t), 2 * heads)](target, slots, k, v, ks, vs, n, layer * num_pages * page_elems,
                                                        page_elems, heads, PAGE_SIZE=page_size, D=d,
                                                        BLOCK_T=block_t, QUANTIZED=quantized, num_warps=4)


def kv_cache_append(cache, layer: int, seq_ids, k: torch.Tensor, v: torch.Tensor, num_tokens=None) -> None:
    """Triton twin of flashkernel.kv_cache_append (PagedKVCache.append: the same checks, page
    bookkeeping and copy-on-write; the rows written by a Triton kernel)."""
    def write(layer, slots, k, v):
        append_rows(cache.pool, layer, slots, k, v, **cache._scale_args())
    cache._append_with(write, "flashkernel.triton.kv_cache_append", layer, seq_ids, k, v, num_tokens)


# ---------------------------------------------------------------- decode attention
# Split-KV decoding (flash-decoding) in two kernels: each program of the first runs one
# (sequence, KV head, split of the context) for all query heads of that KV head's group (GQA: the
# group's rows share every K/V load), K/V read through the page table, and writes its partial
# output and log-sum-exp; the second merges a query head's splits. The scores and P V run on
# tl.dot with 16-bit operands and fp32 accumulation (P rounded to the activation dtype, as the
# CUDA kernel does); an FP8 pool's e4m3 values are exact in either 16-bit type, so they enter the
# dots unscaled and the per-head scales multiply the fp32 scores and output.
_DECODE_BLOCK_N = 32
_DECODE_MIN_SPLIT = 256   # tokens a split runs at least
_DECODE_MAX_SPLITS = 64   # and at most this many splits per sequence (the merge loads them at once)


@triton.jit
def _decode_step(acc, m, l_sum, q, pool_ptr, table_ptr, b, n0, end, table_stride, layer_off, page_elems, head_off,
                 qk_scale, HKV: tl.constexpr, PAGE_SIZE: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
                 UPCAST_DOTS: tl.constexpr):
    """One tile of BLOCK_N keys from n0 (those < end) into the online softmax."""
    d = tl.arange(0, D)
    t = n0 + tl.arange(0, BLOCK_N)
    t_ok = t < end
    page = tl.load(table_ptr + b.to(tl.int64) * table_stride + t // PAGE_SIZE, mask=t_ok, other=0).to(tl.int64)
    row = layer_off + page * page_elems + head_off + (t % PAGE_SIZE) * D
    k = tl.load(pool_ptr + row[:, None] + d[None, :], mask=t_ok[:, None], other=0.0).to(q.dtype)
    v = tl.load(pool_ptr + row[:, None] + HKV * PAGE_SIZE * D + d[None, :], mask=t_ok[:, None], other=0.0).to(q.dtype)
    if UPCAST_DOTS:
        # The CPU interpreter's tl.dot mishandles bfloat16 operands; products of 16-bit values are
        # exact in fp32, so upcasting first gives the same result (as in the attention twin).
        s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32))) * qk_scale
    else:
        s = tl.dot(q, tl.trans(k)) * qk_scale
    s = tl.where(t_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    alpha = tl.exp2(m - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_sum = l_sum * alpha + tl.sum(p, 1)
    if UPCAST_DOTS:
        acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype).to(tl.float32), v.to(tl.float32))
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v)
    return acc, m_new, l_sum


@triton.jit
def _decode_split_kernel(q_ptr, pool_ptr, table_ptr, lens_ptr, part_o_ptr, part_lse_ptr, k_scale_ptr, v_scale_ptr,
                         scale, layer_off, page_elems, table_stride, split_tokens, n_splits,
                         HQ: tl.constexpr, HKV: tl.constexpr, GROUP: tl.constexpr, GROUP_P: tl.constexpr,
                         PAGE_SIZE: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, QUANTIZED: tl.constexpr,
                         INTERPRET: tl.constexpr, SPLIT_TILES: tl.constexpr):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    length = tl.load(lens_ptr + b)
    start = split * split_tokens
    end = start + split_tokens
    if end > length:  # a plain branch: scalars stay scalars under the interpreter too
        end = length
    g = tl.arange(0, GROUP_P)
    d = tl.arange(0, D)
    rows = kvh * GROUP + g  # the group's query heads; rows past the group load zeros, stored nowhere
    row_ok = g < GROUP
    q = tl.load(q_ptr + (b * HQ + rows).to(tl.int64)[:, None] * D + d[None, :], mask=row_ok[:, None], other=0.0)
    k_scale = 1.0
    v_scale = 1.0
    if QUANTIZED:  # this layer's [HKV] scales
        k_scale = tl.load(k_scale_ptr + kvh)
        v_scale = tl.load(v_scale_ptr + kvh)
    qk_scale = scale * k_scale * 1.4426950408889634  # exp2 below: log2(e) folded in
    m = tl.full([GROUP_P], float("-inf"), tl.float32)
    l_sum = tl.zeros([GROUP_P], tl.float32)
    acc = tl.zeros([GROUP_P, D], tl.float32)
    head_off = kvh * PAGE_SIZE * D  # K's rows of this head inside a page; V's are HKV heads further
    if INTERPRET:
        # The CPU interpreter cannot take loop bounds computed from program_id (1-element arrays
        # there): it walks the split's SPLIT_TILES tiles and skips those past its end.
        for it in range(SPLIT_TILES):
            n0 = start + it * BLOCK_N
            if n0 < end:
                acc, m, l_sum = _decode_step(acc, m, l_sum, q, pool_ptr, table_ptr, b, n0, end, table_stride,
                                             layer_off, page_elems, head_off, qk_scale, HKV, PAGE_SIZE, D, BLOCK_N,
                                             True)
    else:
        for n0 in range(start, end, BLOCK_N):
            acc, m, l_sum = _decode_step(acc, m, l_sum, q, pool_ptr, table_ptr, b, n0, end, table_stride, layer_off,
                                         page_elems, head_off, qk_scale, HKV, PAGE_SIZE, D, BLOCK_N, False)
    # A split past its sequence's end ran no tile: lse -inf, weight 0 in the merge.
    has = l_sum > 0
    lse = tl.where(has, m + tl.log2(tl.where(has, l_sum, 1.0)), float("-inf"))  # base 2
    out = tl.where(has[:, None], acc / tl.where(has, l_sum, 1.0)[:, None], 0.0) * v_scale
    part = ((b * HQ + rows).to(tl.int64) * n_splits + split)
    tl.store(part_o_ptr + part[:, None] * D + d[None, :], out, mask=row_ok[:, None])
    tl.store(part_lse_ptr + part, lse, mask=row_ok)


@triton.jit
def _decode_merge_kernel(part_o_ptr, part_lse_ptr, out_ptr, n_splits, D: tl.constexpr, SPLITS_P: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # b * HQ + h
    i = tl.arange(0, SPLITS_P)
    d = tl.arange(0, D)
    ok = i < n_splits
    lse = tl.load(part_lse_ptr + row * n_splits + i, mask=ok, other=float("-inf"))
    top = tl.max(lse, 0)  # finite: every sequence has a token, so split 0 ran one
    w = tl.where(ok, tl.exp2(lse - top), 0.0)
    o = tl.load(part_o_ptr + (row * n_splits + i)[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
    out = tl.sum(o * w[:, None], 0) / tl.sum(w, 0)
    tl.store(out_ptr + row * D + d, out.to(out_ptr.dtype.element_ty))


def decode_pages(q: torch.Tensor, pool: torch.Tensor, layer: int, page_table: torch.Tensor, seq_lens: torch.Tensor,
                 max_seq_len: int, scale: float | None = None, k_scale: torch.Tensor | None = None,
                 v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as torch.ops.flashkernel.paged_decode_attention: q [batch, num_q_heads,
    head_dim] (the pool's dtype; float16/bfloat16 for a float8_e4m3fn pool, with its float32
    [num_layers, num_kv_heads] k_scale and v_scale), pool [num_layers, num_pages, 2, num_kv_heads,
    page_size, head_dim], page_table int32 [batch, max_pages], seq_lens int32 [batch] (each >= 1)
    -> [batch, num_q_heads, head_dim]."""
    op = "flashkernel.triton.paged_decode_attention"
    _check_pool(op, pool)
    num_layers, _, _, hkv, page_size, d = pool.shape
    quantized = pool.dtype == torch.float8_e4m3fn
    if quantized:
        if q.dtype not in (torch.float16, torch.bfloat16):
            raise TypeError(f"{op}: argument 'q' must be float16 or bfloat16 for a float8_e4m3fn pool, got {q.dtype}")
        _check_fp8_scales(op, pool, k_scale, v_scale)
    elif q.dtype != pool.dtype:
        raise TypeError(f"{op}: argument 'q' must have the same dtype as 'pool' ({pool.dtype}), got {q.dtype}")
    elif k_scale is not None or v_scale is not None:
        raise ValueError(f"{op}: arguments 'k_scale' and 'v_scale' are for float8_e4m3fn pools")
    if q.dim() != 3 or q.shape[2] != d or q.shape[1] % hkv != 0:
        raise ValueError(f"{op}: argument 'q' must be [batch, num_q_heads, {d}] with num_q_heads a multiple of "
                         f"num_kv_heads ({hkv}), got shape {tuple(q.shape)}")
    if q.device != pool.device:
        raise ValueError(f"{op}: argument 'q' must be on the pool's device {pool.device}, got {q.device}")
    if not 0 <= layer < num_layers:
        raise ValueError(f"{op}: argument 'layer' must be in [0, {num_layers}), got {layer}")
    batch, hq = q.shape[0], q.shape[1]
    for name, t, dims in (("page_table", page_table, 2), ("seq_lens", seq_lens, 1)):
        if t.dtype != torch.int32 or t.dim() != dims or t.shape[0] != batch:
            raise ValueError(f"{op}: argument '{name}' must be a {dims}-D int32 tensor with one row per sequence "
                             f"({batch}), got {t.dtype} {tuple(t.shape)}")
    if batch and not 1 <= max_seq_len <= page_table.shape[1] * page_size:
        raise ValueError(f"{op}: argument 'max_seq_len' must be in [1, max_pages * page_size = "
                         f"{page_table.shape[1] * page_size}], got {max_seq_len}")
    if scale is not None and not scale > 0:
        raise ValueError(f"{op}: argument 'scale' must be > 0, got {scale}")
    out = torch.empty_like(q)
    if batch == 0:
        return out
    q = q.contiguous()
    group = hq // hkv
    split_tokens = max(_DECODE_MIN_SPLIT, triton.cdiv(triton.cdiv(max_seq_len, _DECODE_MAX_SPLITS), _DECODE_BLOCK_N)
                       * _DECODE_BLOCK_N)
    n_splits = triton.cdiv(max_seq_len, split_tokens)
    part_o = torch.empty((batch, hq, n_splits, d), dtype=torch.float32, device=q.device)
    part_lse = torch.empty((batch, hq, n_splits), dtype=torch.float32, device=q.device)
    ks, vs = _layer_scales(k_scale, v_scale, layer, pool.device, seq_lens)
    page_elems = 2 * hkv * page_size * d
    table = page_table.contiguous()
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    _decode_split_kernel[(batch, hkv, n_splits)](
        q, pool, table, seq_lens.contiguous(), part_o, part_lse, ks, vs,
        float(scale) if scale is not None else d ** -0.5, layer * pool.shape[1] * page_elems, page_elems,
        table.shape[1], split_tokens, n_splits,
        HQ=hq, HKV=hkv, GROUP=group, GROUP_P=max(16, triton.next_power_of_2(group)), PAGE_SIZE=page_size, D=d,
        BLOCK_N=_DECODE_BLOCK_N, QUANTIZED=quantized, INTERPRET=interpreting,
        SPLIT_TILES=split_tokens // _DECODE_BLOCK_N if interpreting else 1, num_warps=4)
    _decode_merge_kernel[(batch * hq,)](part_o, part_lse, out, n_splits, D=d,
                                       SPLITS_P=max(2, triton.next_power_of_2(n_splits)), num_warps=4)
    return out


def paged_decode_attention(q: torch.Tensor, cache, layer: int, seq_ids, *, scale: float | None = None) -> torch.Tensor:
    """Triton twin of flashkernel.paged_decode_attention (same contract and checks)."""
    from flashkernel.ops.kv_cache import paged_decode_with
    return paged_decode_with(decode_pages, "flashkernel.triton.paged_decode_attention", q, cache, layer, seq_ids,
                             scale)
