"""Triton twin of the paged KV cache's gather: one sequence's pages -> contiguous K and V (an FP8
cache's e4m3 values dequantized: scale * value in fp32, rounded once, as the CUDA kernel does)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gather_kernel(pool_ptr, pages_ptr, k_out, v_out, length, layer_off, page_elems, heads, k_scale_ptr, v_scale_ptr,
                   PAGE_SIZE: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr, QUANTIZED: tl.constexpr):
    # grid: (token blocks, 2 * heads); one program copies a [BLOCK_T, D] tile of one head's K or V.
    pid_t = tl.program_id(0)
    kvh = tl.program_id(1)
    kv = kvh // heads
    h = kvh % heads
    t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    d = tl.arange(0, D)
    mask = t < length
    page = tl.load(pages_ptr + t // PAGE_SIZE, mask=mask, other=0).to(tl.int64)
    row = (kv * heads + h) * PAGE_SIZE + t % PAGE_SIZE
    src = pool_ptr + layer_off + page[:, None] * page_elems + row.to(tl.int64)[:, None] * D + d[None, :]
    tile = tl.load(src, mask=mask[:, None], other=0.0)
    if QUANTIZED:  # k_scale_ptr / v_scale_ptr point at this layer's [heads] scales
        if kv == 0:
            scale = tl.load(k_scale_ptr + h)
        else:
            scale = tl.load(v_scale_ptr + h)
        tile = (tile.to(tl.float32) * scale).to(k_out.dtype.element_ty)
    dst_off = (h * length + t).to(tl.int64)[:, None] * D + d[None, :]
    if kv == 0:
        tl.store(k_out + dst_off, tile, mask=mask[:, None])
    else:
        tl.store(v_out + dst_off, tile, mask=mask[:, None])


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
        for name, t in (("k_scale", k_scale), ("v_scale", v_scale)):
            if t is None or t.dtype != torch.float32 or tuple(t.shape) != (pool.shape[0], pool.shape[3]):
                raise ValueError(f"{op}: argument '{name}' must be a float32 tensor [num_layers, num_kv_heads] = "
                                 f"{[pool.shape[0], pool.shape[3]]} for a float8_e4m3fn pool")
    elif pool.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: argument 'pool' must be float16, bfloat16 or float8_e4m3fn, got {pool.dtype}")
    elif k_scale is not None or v_scale is not None or out_dtype not in (None, pool.dtype):
        raise ValueError(f"{op}: arguments 'k_scale', 'v_scale' and 'out_dtype' are for float8_e4m3fn pools")
    if pool.dim() != 6 or pool.shape[2] != 2:
        raise ValueError(f"{op}: argument 'pool' must be [num_layers, num_pages, 2, num_kv_heads, page_size, "
                         f"head_dim], got shape {tuple(pool.shape)}")
    if not pool.is_contiguous():
        raise ValueError(f"{op}: argument 'pool' must be contiguous")
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
        # Unused pointers of a 16-bit pool: any tensor on the device (QUANTIZED=False never reads them).
        ks = k_scale[layer].contiguous() if quantized else pages
        vs = v_scale[layer].contiguous() if quantized else pages
        _gather_kernel[grid](pool, pages.to(pool.device), k, v, length, layer * pool.shape[1] * page_elems,
                             page_elems, heads, ks.to(pool.device), vs.to(pool.device), PAGE_SIZE=page_size, D=d,
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
