"""Paged KV cache: `PagedKVCache` (page pool + host bookkeeping), append / gather, and
`paged_decode_attention` reading K/V straight from the pages.

    cache = flashkernel.PagedKVCache(num_layers=32, num_pages=4096, num_kv_heads=8, head_dim=128)
    s = cache.add_sequence()
    cache.append(layer, [s], k, v)                     # k, v: [tokens, num_kv_heads, head_dim]
    out = flashkernel.paged_decode_attention(q, cache, layer, [s])   # q: [batch, num_q_heads, head_dim]

The bookkeeping is the C++ allocator (torch.classes.flashkernel.KVPageAllocator); the pool is one
torch tensor [num_layers, num_pages, 2, num_kv_heads, page_size, head_dim]. A cache on the CPU
(device="cpu") keeps the same bookkeeping and moves data with plain torch indexing: the reference
path the Triton-interpreter tests use.

FP8 cache: `PagedKVCache(..., dtype=torch.float16, kv_dtype=torch.float8_e4m3fn)` stores K and V
as e4m3(x / scale) with one float32 scale per (layer, KV head) for K and one for V (`k_scale`,
`v_scale`, [num_layers, num_kv_heads], default 1.0), saturated to +-448. append takes and gather /
paged_decode_attention return `dtype` (float16 or bfloat16) tensors. Scales are the caller's
choice: `set_scales(layer, k, v)` or `calibrate(layer, k, v)` (amax / 448 per head from sample
K/V), both only while the layer holds no tokens (tokens already stored keep the scale they were
written with).

The torch ops (torch.ops.flashkernel.kv_cache_append, kv_cache_copy_pages, kv_cache_gather,
paged_decode_attention) take their slots, page ids and lengths as device tensors. Their kernels
never read or write outside the tensors whatever those hold; with check_indices=True (the default)
an op also synchronizes to read the kernels' fault flag and raises ValueError naming the
out-of-range argument. PagedKVCache passes check_indices=False: its indices come from the
allocator and are valid by construction, and a decode step should not wait for the GPU.
"""
from __future__ import annotations

import itertools
import threading
from typing import Sequence

import torch

from flashkernel import _library

_OP = "flashkernel.PagedKVCache"
_FP8 = torch.float8_e4m3fn
_FP8_MAX = 448.0  # e4m3fn's largest finite value


def _quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """e4m3(x / scale) as the kernels store it: fp32 division, round to nearest even, saturated to
    +-448 (torch's own cast turns out-of-range values into NaN). scale broadcasts against x."""
    return (x.float() / scale).clamp(-_FP8_MAX, _FP8_MAX).to(_FP8)


def _dequantize(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """scale * e4m3 value in fp32, rounded once to dtype (what gather returns)."""
    return (x.float() * scale).to(dtype)


class OutOfPagesError(RuntimeError):
    """The pool has too few free pages for a reserve/append; the cache is unchanged."""


def _translate(fn, *args):
    try:
        return fn(*args)
    except RuntimeError as e:
        if "out of pages" in str(e) and not isinstance(e, ValueError):
            raise OutOfPagesError(str(e).splitlines()[0]) from None
        raise


def _seq_list(seq_ids, op: str) -> list[int]:
    if isinstance(seq_ids, int):
        raise TypeError(f"{op}: argument 'seq_ids' must be a sequence of ints, got a single int")
    ids = [int(s) for s in seq_ids]
    if not ids:
        raise ValueError(f"{op}: argument 'seq_ids' must not be empty")
    return ids


class PagedKVCache:
    """A pool of `num_pages` pages of `page_size` tokens for `num_layers` layers, handed to
    sequences as they grow. Page ids are shared by all layers; each layer keeps its own length
    per sequence (a model appends layer by layer).

    Errors leave the cache valid: a call that raises (out of pages, a bad argument, a CUDA error
    such as out of memory while writing) changes nothing, so the next call works as if it had
    not been made. append rolls its bookkeeping back when the data movement after it fails.

    Threads: one cache may be shared by several threads. Every method holds the cache's lock
    (and the C++ allocator its own mutex) while it runs, so each call is atomic; a sequence of
    calls is not. Kernels are queued on the calling thread's current CUDA stream: threads on
    different streams that touch the same sequence must order their streams themselves."""

    def __init__(self, num_layers: int, num_pages: int, num_kv_heads: int, head_dim: int, *,
                 page_size: int = 16, dtype: torch.dtype = torch.float16, kv_dtype: torch.dtype | None = None,
                 device="cuda"):
        for name, val in (("num_layers", num_layers), ("num_pages", num_pages), ("num_kv_heads", num_kv_heads)):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"{_OP}: argument '{name}' must be a positive int, got {val!r}")
        if head_dim not in (64, 128):
            raise ValueError(f"{_OP}: argument 'head_dim' must be 64 or 128, got {head_dim!r}")
        if not isinstance(page_size, int) or page_size < 8 or page_size > 256 or page_size & (page_size - 1):
            raise ValueError(f"{_OP}: argument 'page_size' must be a power of two in [8, 256], got {page_size!r}")
        if dtype not in (torch.float16, torch.bfloat16):
            raise TypeError(f"{_OP}: argument 'dtype' must be torch.float16 or torch.bfloat16, got {dtype}")
        if kv_dtype is None:
            kv_dtype = dtype
        if kv_dtype not in (dtype, _FP8):
            raise TypeError(f"{_OP}: argument 'kv_dtype' must be None, the cache's dtype ({dtype}) or "
                            f"torch.float8_e4m3fn, got {kv_dtype}")
        # Everything else the kernels need (at most 1024 KV heads, fewer than 2^31 pages, a pool
        # size that fits int64): rejected here, not at the first append after the bookkeeping.
        torch.ops.flashkernel.kv_cache_check_layout(num_layers, num_pages, page_size, num_kv_heads, head_dim, dtype,
                                                    kv_dtype)
        self._lock = threading.RLock()
        self.num_layers, self.num_pages, self.page_size = num_layers, num_pages, page_size
        self.num_kv_heads, self.head_dim, self.dtype, self.kv_dtype = num_kv_heads, head_dim, dtype, kv_dtype
        self._alloc = torch.classes.flashkernel.KVPageAllocator(num_pages, page_size, num_layers)
        self.pool = torch.empty((num_layers, num_pages, 2, num_kv_heads, page_size, head_dim), dtype=kv_dtype,
                                device=device)
        self.device = self.pool.device
        # Dequantization scales of an FP8 cache (None for a 16-bit one): value = scale * e4m3.
        self.k_scale = self.v_scale = None
        if self.quantized:
            self.k_scale = torch.ones((num_layers, num_kv_heads), dtype=torch.float32, device=self.device)
            self.v_scale = torch.ones_like(self.k_scale)
        self._version = 0          # bumped by every change to page lists or lengths
        self._tables: dict = {}    # (seq_ids, layer) -> (version, table, lens, max_len) on the device

    @property
    def quantized(self) -> bool:
        """Whether the pool stores float8_e4m3fn (an FP8 cache)."""
        return self.kv_dtype == _FP8

    def _scale_args(self) -> dict:
        return {"k_scale": self.k_scale, "v_scale": self.v_scale} if self.quantized else {}

    # ------------------------------------------------------------------ FP8 scales
    def set_scales(self, layer: int, k_scale, v_scale) -> None:
        """Set an FP8 cache's scales of `layer`: each a positive finite float (every KV head) or
        num_kv_heads of them. Stored values are e4m3(x / scale), so a scale of amax / 448 uses the
        whole e4m3 range for values up to amax (larger ones saturate). Only while no sequence holds
        tokens of `layer`: the tokens already stored would otherwise be read with the wrong scale."""
        op = "flashkernel.PagedKVCache.set_scales"
        if not self.quantized:
            raise ValueError(f"{op}: the cache stores {self.kv_dtype}; scales are for kv_dtype=torch.float8_e4m3fn")
        layer = int(layer)
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"{op}: argument 'layer' must be in [0, {self.num_layers}), got {layer}")
        values = []
        for name, val in (("k_scale", k_scale), ("v_scale", v_scale)):
            t = torch.as_tensor(val, dtype=torch.float32).detach().to("cpu").reshape(-1)
            if t.numel() == 1:
                t = t.expand(self.num_kv_heads)
            if t.numel() != self.num_kv_heads:
                raise ValueError(f"{op}: argument '{name}' must be one value or {self.num_kv_heads} (one per KV head), "
                                 f"got {t.numel()}")
            if not bool(torch.isfinite(t).all() and (t > 0).all()):
                raise ValueError(f"{op}: argument '{name}' must be finite and > 0, got {t.tolist()}")
            values.append(t)
        with self._lock:
            busy = [s for s in self.sequence_ids() if self.seq_len(s, layer) > 0]
            if busy:
                raise ValueError(f"{op}: layer {layer} holds tokens of sequence(s) {busy[:8]}; its scales can only "
                                 f"change while it is empty")
            self.k_scale[layer] = values[0].to(self.device)
            self.v_scale[layer] = values[1].to(self.device)

    def calibrate(self, layer: int, k: torch.Tensor, v: torch.Tensor, *, margin: float = 1.0) -> None:
        """Set `layer`'s scales from sample K/V ([tokens, num_kv_heads, head_dim]): per KV head,
        scale = margin * amax / 448 (1.0 for a head whose samples are all zero), so the samples use
        the whole e4m3 range and later values up to `margin` times larger do not saturate."""
        op = "flashkernel.PagedKVCache.calibrate"
        if not margin >= 1.0:
            raise ValueError(f"{op}: argument 'margin' must be >= 1, got {margin}")
        scales = []
        for name, t in (("k", k), ("v", v)):
            if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[1:] != (self.num_kv_heads, self.head_dim):
                raise ValueError(f"{op}: argument '{name}' must be a tensor [tokens, {self.num_kv_heads}, "
                                 f"{self.head_dim}], got {tuple(t.shape) if isinstance(t, torch.Tensor) else t!r}")
            amax = t.detach().float().abs().amax(dim=(0, 2)) if t.shape[0] else torch.zeros(self.num_kv_heads)
            if not bool(torch.isfinite(amax).all()):
                raise ValueError(f"{op}: argument '{name}' holds non-finite values")
            scales.append(torch.where(amax > 0, amax * margin / _FP8_MAX, torch.ones_like(amax)))
        self.set_scales(layer, scales[0], scales[1])

    # ------------------------------------------------------------------ bookkeeping
    @property
    def bytes_per_page(self) -> int:
        """Bytes one page occupies across all layers (K and V)."""
        return self.num_layers * 2 * self.num_kv_heads * self.page_size * self.head_dim * self.pool.element_size()

    def _changed(self) -> None:
        self._version += 1
        self._tables.clear()

    def add_sequence(self) -> int:
        with self._lock:
            self._changed()
            return int(self._alloc.add_sequence())

    def reserve(self, seq_id: int, n_tokens: int) -> None:
        """Allocate the pages the next `n_tokens` tokens need (raises OutOfPagesError, changing
        nothing, when the pool is too small)."""
        with self._lock:
            _translate(self._alloc.reserve, int(seq_id), int(n_tokens))
            self._changed()

    def free_sequence(self, seq_id: int) -> None:
        with self._lock:
            self._alloc.free_sequence(int(seq_id))
            self._changed()

    def fork(self, seq_id: int) -> int:
        """A new sequence sharing `seq_id`'s pages (no copy); the first append into a shared,
        partially filled page copies it (copy-on-write)."""
        with self._lock:
            new = int(self._alloc.fork(int(seq_id)))
            self._changed()
            return new

    def seq_len(self, seq_id: int, layer: int | None = None) -> int:
        return int(self._alloc.length(int(seq_id), -1 if layer is None else int(layer)))

    def pages(self, seq_id: int) -> list[int]:
        return self._alloc.pages(int(seq_id)).tolist()

    def sequence_ids(self) -> list[int]:
        return list(self._alloc.sequence_ids())

    def refcount(self, page: int) -> int:
        return int(self._alloc.refcount(int(page)))

    def free_pages(self) -> list[int]:
        return list(self._alloc.free_pages())

    def check_invariants(self) -> None:
        self._alloc.check_invariants()

    def memory_stats(self) -> dict:
        """pages used/free, bytes, and fragmentation (allocated but unused token slots)."""
        (total, used, free, nseq, slots, stored, frag) = self._alloc.memory_stats()
        bpp = self.bytes_per_page
        return {"pages_total": total, "pages_used": used, "pages_free": free, "num_sequences": nseq,
                "token_slots_allocated": slots, "tokens_stored": stored, "fragmentation_tokens": frag,
                "bytes_total": total * bpp, "bytes_used": used * bpp,
                "bytes_wasted": frag * bpp // self.page_size}

    def page_table(self, seq_ids: Sequence[int], layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(int32 [batch, max_pages] page table, int32 [batch] lengths of `layer` (None: the
        longest layer)) on the cache's device. Cached until the cache changes."""
        table, lens, _, _ = self._device_table(_seq_list(seq_ids, "flashkernel.PagedKVCache.page_table"), layer)
        return table, lens

    def _device_table(self, ids: list[int], layer: int | None):
        with self._lock:
            return self._device_table_locked(ids, layer)

    def _device_table_locked(self, ids: list[int], layer: int | None):
        key = (tuple(ids), layer)
        hit = self._tables.get(key)
        if hit is not None:
            return hit
        table, lens = self._alloc.page_table(ids, -1 if layer is None else int(layer))
        max_len = int(lens.max()) if lens.numel() else 0
        entry = (table.to(self.device, non_blocking=True), lens.to(self.device, non_blocking=True), max_len,
                 lens.tolist())
        self._tables[key] = entry
        return entry

    # ------------------------------------------------------------------ data
    def append(self, layer: int, seq_ids: Sequence[int], k: torch.Tensor, v: torch.Tensor,
               num_tokens: Sequence[int] | None = None) -> None:
        """Write new tokens of `layer`: k, v [total_tokens, num_kv_heads, head_dim], the tokens of
        seq_ids[0] first. num_tokens[i]: tokens of seq_ids[i] (default: one each, a decode step).
        All-or-nothing: raises OutOfPagesError before writing anything when the pool is full."""
        self._append_with(self._write_tokens, "flashkernel.PagedKVCache.append", layer, seq_ids, k, v, num_tokens)

    def _append_with(self, write, op: str, layer, seq_ids, k, v, num_tokens) -> None:
        """append's checks and bookkeeping, the rows written by write(layer, slots, k, v): the CUDA
        op, or the Triton twin's kernel (flashkernel.triton.kv_cache_append)."""
        ids = _seq_list(seq_ids, op)
        counts = [1] * len(ids) if num_tokens is None else [int(n) for n in num_tokens]
        if len(counts) != len(ids):
            raise ValueError(f"{op}: argument 'num_tokens' must have one entry per sequence ({len(ids)}), "
                             f"got {len(counts)}")
        total = sum(counts)
        for name, t in (("k", k), ("v", v)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{op}: argument '{name}' must be a tensor")
            if t.shape != (total, self.num_kv_heads, self.head_dim):
                raise ValueError(f"{op}: argument '{name}' must have shape "
                                 f"[{total}, {self.num_kv_heads}, {self.head_dim}] (sum(num_tokens), kv heads, "
                                 f"head_dim), got {tuple(t.shape)}")
            if t.dtype != self.dtype:
                raise TypeError(f"{op}: argument '{name}' must have the cache's dtype {self.dtype}, got {t.dtype}")
            if t.device != self.device:
                raise ValueError(f"{op}: argument '{name}' must be on the cache's device {self.device}, "
                                 f"got {t.device}")
        with self._lock:
            # The plan commits the lengths before any data moves; if the copies or the write
            # fail (out of memory, a CUDA error), cancel it so the lengths never count tokens
            # that were not written and the pages return to the free list.
            slots, src, dst, plan_id = _translate(self._alloc.plan_append, int(layer), ids, counts)
            self._changed()
            try:
                if src.numel():
                    self._copy_pages(src, dst)
                if total:
                    write(int(layer), slots, k.contiguous(), v.contiguous())
            except BaseException:
                self._alloc.cancel_append(plan_id)
                self._changed()
                raise

    def _write_tokens(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        if self.device.type == "cuda":
            torch.ops.flashkernel.kv_cache_append(self.pool, layer, slots.to(self.device, non_blocking=True), k, v,
                                                  check_indices=False, **self._scale_args())
        else:
            if self.quantized:
                k = _quantize(k, self.k_scale[layer][:, None])
                v = _quantize(v, self.v_scale[layer][:, None])
            page, off = slots // self.page_size, slots % self.page_size
            lp = self.pool[layer]
            lp[page, 0, :, off] = k
            lp[page, 1, :, off] = v

    def _copy_pages(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        if self.device.type == "cuda":
            torch.ops.flashkernel.kv_cache_copy_pages(self.pool, src.to(self.device), dst.to(self.device),
                                                      check_indices=False)
        else:
            self.pool[:, dst.long()] = self.pool[:, src.long()]

    def gather(self, layer: int, seq_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Contiguous copies of one sequence's K and V of `layer`, each [num_kv_heads, len, head_dim]."""
        op = "flashkernel.PagedKVCache.gather"
        layer = int(layer)
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"{op}: argument 'layer' must be in [0, {self.num_layers}), got {layer}")
        with self._lock:
            n = self.seq_len(seq_id, layer)
            pages = self._alloc.pages(int(seq_id))
            if self.device.type == "cuda":
                extra = {**self._scale_args(), "out_dtype": self.dtype} if self.quantized else {}
                return torch.ops.flashkernel.kv_cache_gather(self.pool, layer, pages.to(self.device), n,
                                                             check_indices=False, **extra)
            kv = self.pool[layer, pages.long()]  # [pages, 2, H, page_size, d]
        kv = kv.permute(1, 2, 0, 3, 4).reshape(2, self.num_kv_heads, -1, self.head_dim)[:, :, :n]
        k, v = kv[0].contiguous(), kv[1].contiguous()
        if self.quantized:
            k = _dequantize(k, self.k_scale[layer][:, None, None], self.dtype)
            v = _dequantize(v, self.v_scale[layer][:, None, None], self.dtype)
        return k, v


def kv_cache_append(cache: PagedKVCache, layer: int, seq_ids: Sequence[int], k: torch.Tensor, v: torch.Tensor,
                    num_tokens: Sequence[int] | None = None) -> None:
    """Function form of PagedKVCache.append."""
    cache.append(layer, seq_ids, k, v, num_tokens)


def kv_cache_gather(cache: PagedKVCache, layer: int, seq_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Function form of PagedKVCache.gather: contiguous [num_kv_heads, len, head_dim] K and V."""
    return cache.gather(layer, seq_id)


def _cache_layer(op: str, cache, layer) -> int:
    """The attention ops' cache and layer arguments, checked: the layer as an int."""
    if not isinstance(cache, PagedKVCache):
        raise TypeError(f"{op}: argument 'cache' must be a flashkernel.PagedKVCache, got {type(cache).__name__}")
    layer = int(layer)
    if not 0 <= layer < cache.num_layers:
        raise ValueError(f"{op}: argument 'layer' must be in [0, {cache.num_layers}), got {layer}")
    return layer


def paged_decode_attention(q: torch.Tensor, cache: PagedKVCache, layer: int, seq_ids: Sequence[int], *,
                           scale: float | None = None) -> torch.Tensor:
    """softmax(scale * q K^T) V for one new query token per sequence, K/V read through the page
    table (no gather). q: [batch, num_q_heads, head_dim] with batch = len(seq_ids) and num_q_heads a
    multiple of the cache's num_kv_heads (GQA). Long contexts are split across thread blocks and
    merged by log-sum-exp (flash-decoding). Default scale: 1/sqrt(head_dim)."""
    def decode(q, pool, layer, table, lens, max_len, scale, **scales):
        return torch.ops.flashkernel.paged_decode_attention(q, pool, layer, table, lens, max_len, scale,
                                                            check_indices=False, **scales)
    return paged_decode_with(decode, "flashkernel.paged_decode_attention", q, cache, layer, seq_ids, scale)


def paged_decode_with(decode, op: str, q, cache, layer, seq_ids, scale) -> torch.Tensor:
    """paged_decode_attention's checks, then `decode(q, pool, layer, page_table, seq_lens,
    max_seq_len, scale, **fp8 scales)`: the CUDA op or its Triton twin, which check the tensors."""
    layer = _cache_layer(op, cache, layer)
    ids = _seq_list(seq_ids, op)
    if not isinstance(q, torch.Tensor) or q.dim() != 3:
        raise ValueError(f"{op}: argument 'q' must be a 3-D tensor [batch, num_q_heads, head_dim], got "
                         f"{tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__}")
    if q.shape[0] != len(ids):
        raise ValueError(f"{op}: argument 'q' must have one row per sequence ({len(ids)}), got shape {tuple(q.shape)}")
    if scale is not None and not scale > 0:
        raise ValueError(f"{op}: argument 'scale' must be > 0, got {scale}")
    with cache._lock:  # the table must stay the one the kernel reads until it is queued
        table, lens, max_len, host_lens = cache._device_table(ids, layer)
        empty = [s for s, n in zip(ids, host_lens) if n == 0]
        if empty:
            raise ValueError(f"{op}: argument 'seq_ids' lists sequence(s) {empty} with no tokens in layer {layer}")
        return decode(q, cache.pool, layer, table, lens, max_len, scale, **cache._scale_args())


def paged_prefill_attention(q: torch.Tensor, cache: PagedKVCache, layer: int, seq_ids: Sequence[int],
                            q_lens: Sequence[int], *, scale: float | None = None,
                            window: tuple[int, int] | None = None, softcap: float | None = None,
                            kv_read: str = "auto") -> torch.Tensor:
    """Prefill over a paged cache (chunked prefill, multi-turn continuation): each sequence's
    q_lens[i] new query tokens attend causally to everything `layer` of the cache holds for it,
    its earlier tokens and the new ones (appended before this call), bottom-right aligned: new
    token t of a sequence of length L sits at position L - q_lens[i] + t. q: [sum(q_lens),
    num_q_heads, head_dim], sequences in seq_ids order, num_q_heads a multiple of the cache's
    num_kv_heads. Returns [sum(q_lens), num_q_heads, head_dim]. window / softcap as
    flash_attention's.

    kv_read: "pages" runs the Hopper attention kernel with K/V read through the page table where
    they lie (one launch, no copy; a compute capability 9.x GPU, an sm_90a build and a 16-bit
    cache), "gather" copies each sequence's K/V into one packed batch (kv_cache_gather) and runs
    flash_attention_varlen over it (every GPU, FP8 caches too), "auto" the first where it can run,
    else the second."""
    # The gather path's offsets come from q_lens and the cache's own lengths, checked here: no
    # second check of their values (a device-to-host copy) before the varlen call.
    from flashkernel.ops.attention import varlen_with_trusted_offsets
    op = "flashkernel.paged_prefill_attention"
    if kv_read not in ("auto", "pages", "gather"):
        raise ValueError(f"{op}: argument 'kv_read' must be 'auto', 'pages' or 'gather', got {kv_read!r}")
    return paged_prefill_with(varlen_with_trusted_offsets, op, q, cache, layer, seq_ids, q_lens, kv_read=kv_read,
                              scale=scale, window=window, softcap=softcap)


# Whether kv_read="auto" takes the paged kernel where it can run: measured 1.7-4.1x the gather path
# on an H100 (kv_cache.csv, the three prefill cases).
_AUTO_READS_PAGES = True


def _pages_readable_by_kernel(cache: PagedKVCache) -> bool:
    """Whether the Hopper paged-prefill kernel can read this cache: a 16-bit pool on a 9.x GPU
    with sm_90a code in the build."""
    if cache.device.type != "cuda" or cache.quantized:
        return False
    from flashkernel import _paths
    return _paths.hopper_kernels_run(torch.cuda.get_device_capability(cache.device),
                                     _paths.built_archs(_library.load()))


def paged_prefill_with(attention, op: str, q, cache, layer, seq_ids, q_lens, kv_read: str = "gather",
                       **kwargs) -> torch.Tensor:
    """paged_prefill_attention's checks, then either the paged kernel (kv_read "pages", or "auto"
    where it can run) or the packing of gathered K/V for `attention`, a varlen attention function
    (the CUDA op or its Triton twin)."""
    layer = _cache_layer(op, cache, layer)
    ids = _seq_list(seq_ids, op)
    lens_q = [int(n) for n in q_lens]
    if len(lens_q) != len(ids):
        raise ValueError(f"{op}: argument 'q_lens' must have one entry per sequence ({len(ids)}), got {len(lens_q)}")
    if any(n < 0 for n in lens_q):
        raise ValueError(f"{op}: argument 'q_lens' must be >= 0, got {lens_q}")
    if not isinstance(q, torch.Tensor) or q.dim() != 3:
        raise ValueError(f"{op}: argument 'q' must be a 3-D tensor [sum(q_lens), num_q_heads, head_dim], got "
                         f"{tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__}")
    if q.shape[0] != sum(lens_q) or q.shape[2] != cache.head_dim:
        raise ValueError(f"{op}: argument 'q' must have shape [{sum(lens_q)}, num_q_heads, {cache.head_dim}] "
                         f"(sum(q_lens), heads, the cache's head_dim), got {tuple(q.shape)}")
    if q.shape[1] % cache.num_kv_heads != 0:
        raise ValueError(f"{op}: argument 'q' must have a number of heads ({q.shape[1]}) that is a multiple of the "
                         f"cache's num_kv_heads ({cache.num_kv_heads})")
    if q.device != cache.device:
        raise ValueError(f"{op}: argument 'q' must be on the cache's device {cache.device}, got {q.device}")
    wants_pages = kv_read == "pages" or (kv_read == "auto" and _AUTO_READS_PAGES)
    through_pages = wants_pages and _pages_readable_by_kernel(cache)
    if kv_read == "pages" and not through_pages:
        raise ValueError(f"{op}: argument 'kv_read' is 'pages', which needs a compute capability 9.x GPU, an "
                         f"sm_90a build and a float16/bfloat16 cache")
    cu_q_t = torch.tensor([0, *itertools.accumulate(lens_q)], dtype=torch.int32, device=q.device)
    ks, vs, lens_k = [], [], []
    with cache._lock:  # one consistent view of every sequence's pages
        for sid, nq in zip(ids, lens_q):
            n = cache.seq_len(sid, layer)
            if nq > n:
                raise ValueError(f"{op}: sequence {sid} holds {n} tokens in layer {layer}, fewer than its "
                                 f"{nq} new query tokens: append the new K/V before the attention")
            lens_k.append(n)
        if through_pages:  # K/V read where they lie, through the page table
            from flashkernel.ops.attention import window_and_softcap
            left, right, cap = window_and_softcap(op, kwargs.get("window"), kwargs.get("softcap"))
            table, lens, max_len, _ = cache._device_table(ids, layer)
            return torch.ops.flashkernel.paged_prefill_attention(
                q.contiguous(), cache.pool, layer, table, lens, cu_q_t, max(lens_q, default=0), max_len,
                kwargs.get("scale"), left, right, cap)
        for sid, n in zip(ids, lens_k):  # else gathered into one packed copy
            if n:
                k, v = cache.gather(layer, sid)
                ks.append(k.transpose(0, 1))  # [n, kv_heads, head_dim]
                vs.append(v.transpose(0, 1))
    empty = q.new_empty((0, cache.num_kv_heads, cache.head_dim))
    k_packed = torch.cat(ks) if ks else empty
    v_packed = torch.cat(vs) if vs else empty
    cu_k_t = torch.tensor([0, *itertools.accumulate(lens_k)], dtype=torch.int32, device=q.device)
    return attention(q, k_packed, v_packed, cu_q_t, cu_k_t, max(lens_q, default=0), max(lens_k, default=0),
                     causal=True, **kwargs)


@_library.register_fake("flashkernel::kv_cache_append")
def _append_fake(pool, layer, slots, k, v, check_indices=True, k_scale=None, v_scale=None):
    return None


@_library.register_fake("flashkernel::kv_cache_copy_pages")
def _copy_pages_fake(pool, src, dst, check_indices=True):
    return None


@_library.register_fake("flashkernel::kv_cache_gather")
def _gather_fake(pool, layer, pages, length, check_indices=True, k_scale=None, v_scale=None, out_dtype=None):
    shape = (pool.shape[3], length, pool.shape[5])
    dtype = pool.dtype if out_dtype is None else out_dtype
    return pool.new_empty(shape, dtype=dtype), pool.new_empty(shape, dtype=dtype)


@_library.register_fake("flashkernel::paged_prefill_attention")
def _paged_prefill_fake(q, pool, layer, page_table, seq_lens, cu_seqlens_q, max_seqlen_q, max_seqlen_k, scale=None,
                        window_left=-1, window_right=-1, softcap=0.0):
    if q.shape[-1] != pool.shape[-1]:
        raise ValueError(f"flashkernel.paged_prefill_attention: argument 'q' must have head_dim {pool.shape[-1]} "
                         f"(the pool's), got shape {tuple(q.shape)}")
    return torch.empty_like(q)


@_library.register_fake("flashkernel::paged_decode_attention")
def _paged_decode_fake(q, pool, layer, page_table, seq_lens, max_seq_len, scale=None, check_indices=True,
                       variant=-1, k_scale=None, v_scale=None):
    if q.shape[-1] != pool.shape[-1]:
        raise ValueError(f"flashkernel.paged_decode_attention: argument 'q' must have head_dim {pool.shape[-1]} "
                         f"(the pool's), got shape {tuple(q.shape)}")
    return torch.empty_like(q)
