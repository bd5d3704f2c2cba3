"""Paged KV cache benchmarks.

memory: pages-based vs a contiguous cache pre-allocated at max length (bytes, savings), for a batch
        of 64 sequences with lengths drawn from stated distributions (no timing).
gather: pages -> contiguous K/V (CUDA and Triton) vs a contiguous read (torch clone) of the same
        bytes; GB/s counts bytes read + written.
decode: paged decode attention (flashkernel_cuda; flashkernel_triton: its Triton twin) vs SDPA over a
        contiguous cache of the same lengths, gather + SDPA, and device_copy (a copy whose read + write bytes equal the K/V bytes: the HBM ceiling).
        GB/s counts the K/V bytes read. flashkernel_cuda_fp8: the same shapes over an FP8 cache
        (kv_dtype=torch.float8_e4m3fn, fp16 q/out); GB/s counts the e4m3 bytes it reads (half),
        and the extra column time_ratio_vs_fp16_paged = flashkernel_cuda's time / its time, same
        run (> 1: the FP8 cache is faster).
prefill: paged_prefill_attention of `new` tokens per sequence onto a cached `prefix` (chunked
        prefill, a second turn), config "workload=paged_prefill batch prefix new Hq Hkv d page":
        flashkernel_paged_prefill (kv_read="auto"; _pages: the paged Hopper kernel, a failed row
        elsewhere),
        gather_then_attention (kv_read="gather": the K/V gathered, then one varlen call),
        flashkernel_dense_prefill (the dense kernel, causal bottom-right, on contiguous K/V of the
        same lengths: the goal's baseline) and flashkernel_varlen_contiguous (one varlen call on
        contiguous packed K/V: what the gather path runs after its copy). TFLOP/s of the useful
        (row, key) pairs.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import flashkernel
import flashkernel.triton
from flashkernel.bench.ops.attention_breadth import time_impls
from flashkernel.triton.kv_cache import decode_pages, gather_pages

OP = "kv_cache"
D = 128
DTYPE = torch.float16
FP8 = torch.float8_e4m3fn


def _filled_cache(batch, ctx, hkv, page_size, layers=1, kv_dtype=None):
    """A cache whose sequences each hold `ctx` tokens of random K/V, pages handed out round-robin
    (a few pages per sequence per round, as decoding interleaves them) so tables are scattered."""
    pages = batch * math.ceil(ctx / page_size)
    cache = flashkernel.PagedKVCache(layers, pages, hkv, D, page_size=page_size, dtype=DTYPE, kv_dtype=kv_dtype)
    if cache.quantized:
        # Random e4m3 codes 0x00-0x5e (finite, 0 to 28; there is no normal_ for float8), scales 1.
        cache.pool.view(torch.uint8).random_(0, 0x5f)
    else:
        cache.pool.normal_()
    ids = [cache.add_sequence() for _ in range(batch)]
    step = 8 * page_size
    for r in range(0, ctx, step):
        for s in ids:
            cache.reserve(s, min(r + step, ctx))
    for layer in range(layers):
        cache._alloc.plan_append(layer, ids, [ctx] * batch)  # lengths only: the data is the random pool
    cache._changed()
    return cache, ids


def _record_skip(ctx, impl, config, why):
    ctx.record(OP, impl, DTYPE, config, None, note=why)


MEMORY_MAX_LENS = (1024, 2048, 4096)
MEMORY_DISTS = 2  # uniform and skewed lengths
PAGE_SIZES = (16, 256)


def gather_lengths(quick: bool) -> tuple[int, ...]:
    return (4096,) if quick else (4096, 32768)


def decode_cases(quick: bool) -> list[tuple[int, int, int, int]]:
    """(batch, context, KV heads, page size) of the decode sweep, 32 query heads."""
    if quick:
        return [(16, 4096, 8, 16), (1, 32768, 8, 16)]
    # Group sizes 1, 4, 8 (Hkv 32/8/4) at page 16; page 256 at the long shapes; groups of 16.
    cases = [(b, c, hkv, 16) for b in (1, 16, 64) for c in (512, 4096, 32768) for hkv in (32, 8, 4)]
    cases += [(b, c, hkv, 256) for b in (16, 64) for c in (4096, 32768) for hkv in (32, 8)]
    cases += [(b, c, 2, 16) for b in (16, 64) for c in (4096, 32768)]
    return cases


# (batch, prefix, new, Hq, Hkv, head_dim, page size) of the prefill rows: the point (512 new
# tokens onto a 4096-token prefix), a prefix that ends inside a page, and a short chunk.
PREFILL_CASES = [(4, 4096, 512, 32, 8, 128, 16), (4, 1000, 200, 32, 8, 128, 16), (8, 2048, 64, 32, 8, 64, 256)]


def count_configs(quick: bool) -> int:
    """Configurations run(ctx, quick) measures (memory, gather, decode, prefill), for the progress
    display."""
    return (len(MEMORY_MAX_LENS) * MEMORY_DISTS * len(PAGE_SIZES) + len(gather_lengths(quick)) * len(PAGE_SIZES)
            + len(decode_cases(quick)) + len(PREFILL_CASES))


def bench_memory(ctx) -> None:
    # Llama-like per-token K/V footprint: 32 layers x 8 KV heads x d 128, fp16.
    layers, hkv, elem = 32, 8, 2
    bytes_per_token = layers * 2 * hkv * D * elem
    batch = 64
    g = torch.Generator().manual_seed(0)  # a stated, reproducible draw of lengths
    for max_len in MEMORY_MAX_LENS:
        dists = {
            "uniform[1,max]": torch.randint(1, max_len + 1, (batch,), generator=g),
            # many short chats, a few long documents: lengths ~ max * U^3
            "skewed(max*U^3)": (max_len * torch.rand(batch, generator=g) ** 3).long().clamp(1, max_len),
        }
        for dist, lens in dists.items():
            lens = lens.tolist()
            for page_size in PAGE_SIZES:
                alloc = torch.classes.flashkernel.KVPageAllocator(batch * math.ceil(max_len / page_size), page_size, 1)
                ids = [alloc.add_sequence() for _ in lens]
                alloc.plan_append(0, ids, lens)
                total, used, free, nseq, slots, stored, frag = alloc.memory_stats()
                paged = used * page_size * bytes_per_token
                contiguous = batch * max_len * bytes_per_token
                config = f"batch={batch} max={max_len} dist={dist} page={page_size}"
                row = ctx.record(OP, "memory_paged", DTYPE, config, None,
                                 note=f"bytes_paged={paged} bytes_contiguous={contiguous}")
                row.update({"bytes_paged": paged, "bytes_contiguous_max_len": contiguous,
                            "savings_pct": f"{100 * (1 - paged / contiguous):.1f}",
                            "waste_tokens_per_seq": f"{frag / batch:.2f}", "page_size": page_size})


def bench_gather(ctx, quick) -> None:
    hkv = 8
    for seq_len in gather_lengths(quick):
        for page_size in PAGE_SIZES:
            nbytes = 2 * hkv * seq_len * D * 2  # K + V of one layer
            config = f"len={seq_len} hkv={hkv} d={D} page={page_size}"

            def make():
                cache, ids = _filled_cache(1, seq_len, hkv, page_size)
                pages = torch.tensor(cache.pages(ids[0]), dtype=torch.int32, device="cuda")
                return cache.pool, pages

            sets = ctx.rotating(make, nbytes)
            ctx.record(OP, "gather_cuda", DTYPE, config,
                       ctx.time(lambda pool, pages: torch.ops.flashkernel.kv_cache_gather(
                           pool, 0, pages, seq_len, check_indices=False), sets),
                       bytes_moved=2 * nbytes)
            ctx.record(OP, "gather_triton", DTYPE, config,
                       ctx.time(lambda pool, pages: gather_pages(pool, 0, pages, seq_len), sets), bytes_moved=2 * nbytes)
            del sets
            csets = ctx.rotating(lambda: (torch.randn(2, hkv, seq_len, D, device="cuda", dtype=DTYPE),), nbytes)
            ctx.record(OP, "contiguous_read", DTYPE, config, ctx.time(lambda t: t.clone(), csets),
                       bytes_moved=2 * nbytes)
            del csets


def bench_decode(ctx, quick) -> None:
    total_mem = torch.cuda.get_device_properties(0).total_memory
    hq = 32
    for batch, seq_len, hkv, page_size in decode_cases(quick):
        kv_bytes = batch * seq_len * hkv * D * 2 * 2
        config = f"batch={batch} ctx={seq_len} hq/hkv={hq}/{hkv} d={D} page={page_size}"
        # Each impl allocates its own inputs and frees them before the next; an impl that needs
        # more than a quarter of the card per input set is recorded as skipped.
        budget = 0.25 * total_mem

        def q_of():
            return torch.randn(batch, hq, D, device="cuda", dtype=DTYPE)

        # --- paged (flashkernel)
        def make_paged():
            cache, ids = _filled_cache(batch, seq_len, hkv, page_size)
            table, lens = cache.page_table(ids, 0)
            return q_of(), cache.pool, table, lens

        if kv_bytes <= budget:
            sets = ctx.rotating(make_paged, kv_bytes)
            # The library's choice (the shared-memory ring, PagedDecodeVariant 4), then the
            # register-fed tensor-core loop (variant 3, the default before it) by name.
            paged_rows = {}
            for impl, variant in (("flashkernel_cuda", -1), ("flashkernel_cuda_regs", 3)):
                paged_rows[impl] = ctx.record(
                    OP, impl, DTYPE, config,
                    ctx.time(lambda q, pool, table, lens, v=variant: torch.ops.flashkernel.paged_decode_attention(
                        q, pool, 0, table, lens, seq_len, check_indices=False, variant=v), sets),
                    bytes_moved=kv_bytes)
            # The Triton twin of the same op (flashkernel.triton.paged_decode_attention's kernels).
            ctx.record(OP, "flashkernel_triton", DTYPE, config,
                       ctx.time(lambda q, pool, table, lens: decode_pages(q, pool, 0, table, lens, seq_len), sets),
                       bytes_moved=kv_bytes)
            if page_size == 16:
                # gather + SDPA: our gather per sequence into one contiguous batch, then SDPA.
                if 2 * kv_bytes <= budget:
                    def gather_sdpa(q, pool, table, lens):
                        ks, vs = [], []
                        for b in range(batch):
                            k, v = torch.ops.flashkernel.kv_cache_gather(pool, 0, table[b], seq_len, check_indices=False)
                            ks.append(k)
                            vs.append(v)
                        return F.scaled_dot_product_attention(q.unsqueeze(2), torch.stack(ks), torch.stack(vs),
                                                              enable_gqa=hq != hkv)
                    ctx.record(OP, "gather_then_sdpa", DTYPE, config, ctx.time(gather_sdpa, sets),
                               bytes_moved=kv_bytes)
                else:
                    _record_skip(ctx, "gather_then_sdpa", config, "pool + gathered copy exceed the memory budget")
            del sets
            torch.cuda.empty_cache()
            _bench_decode_fp8(ctx, batch, seq_len, hkv, page_size, config, q_of, paged_rows["flashkernel_cuda"])
        else:
            _record_skip(ctx, "flashkernel_cuda", config, "K/V exceeds the memory budget")
        torch.cuda.empty_cache()

        # --- SDPA over a contiguous cache of the same lengths
        if kv_bytes <= budget:
            csets = ctx.rotating(lambda: (q_of().unsqueeze(2),
                                          torch.randn(batch, hkv, seq_len, D, device="cuda", dtype=DTYPE),
                                          torch.randn(batch, hkv, seq_len, D, device="cuda", dtype=DTYPE)), kv_bytes)
            ctx.record(OP, "sdpa_contiguous", DTYPE, config,
                       ctx.time(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=hq != hkv), csets),
                       bytes_moved=kv_bytes)
            del csets
        else:
            _record_skip(ctx, "sdpa_contiguous", config, "K/V exceeds the memory budget")
        torch.cuda.empty_cache()

        # --- device copy moving the same number of bytes (read + write = K/V bytes)
        n = kv_bytes // 2 // 2
        dsets = ctx.rotating(lambda: (torch.empty(n, device="cuda", dtype=DTYPE),
                                      torch.randn(n, device="cuda", dtype=DTYPE)), kv_bytes)
        ctx.record(OP, "device_copy", DTYPE, config, ctx.time(lambda dst, src: dst.copy_(src), dsets),
                   bytes_moved=kv_bytes)
        del dsets
        torch.cuda.empty_cache()


def _bench_decode_fp8(ctx, batch, seq_len, hkv, page_size, config, q_of, fp16_row) -> None:
    """The FP8-cache row of one decode configuration, next to the fp16 paged kernel's row."""
    fp8_bytes = batch * seq_len * hkv * D * 2  # K + V, one byte each

    def make():
        cache, ids = _filled_cache(batch, seq_len, hkv, page_size, kv_dtype=FP8)
        table, lens = cache.page_table(ids, 0)
        return q_of(), cache.pool, table, lens, cache.k_scale, cache.v_scale

    sets = ctx.rotating(make, fp8_bytes)
    timing = ctx.time(lambda q, pool, table, lens, ks, vs: torch.ops.flashkernel.paged_decode_attention(
        q, pool, 0, table, lens, seq_len, check_indices=False, k_scale=ks, v_scale=vs), sets)
    del sets
    ratio = float(fp16_row["median_ms"]) / timing.median_ms if fp16_row.get("median_ms") else float("nan")
    row = ctx.record(OP, "flashkernel_cuda_fp8", DTYPE, config, timing, bytes_moved=fp8_bytes,
                     note=f"kv_dtype=float8_e4m3fn; {ratio:.2f}x the speed of flashkernel_cuda (fp16 cache), same run")
    row["time_ratio_vs_fp16_paged"] = f"{ratio:.3f}"


def bench_prefill(ctx, batch, prefix, new, hq, hkv, d, page) -> None:
    n = prefix + new
    config = f"workload=paged_prefill batch={batch} prefix={prefix} new={new} Hq={hq} Hkv={hkv} d={d} page={page}"
    pairs = batch * (new * prefix + new * (new + 1) / 2)  # each new token sees the prefix and itself
    flops = 4.0 * hq * pairs * d
    elem = torch.tensor([], dtype=DTYPE).element_size()
    io_bytes = (2 * batch * new * hq + 2 * batch * n * hkv) * d * elem
    cu_q = torch.arange(batch + 1, dtype=torch.int32, device="cuda") * new
    cu_k = torch.arange(batch + 1, dtype=torch.int32, device="cuda") * n

    def make():
        k = torch.randn(batch * n, hkv, d, device="cuda", dtype=DTYPE)
        v = torch.randn(batch * n, hkv, d, device="cuda", dtype=DTYPE)
        q = torch.randn(batch * new, hq, d, device="cuda", dtype=DTYPE)
        cache = flashkernel.PagedKVCache(num_layers=1, num_pages=batch * ((n + page - 1) // page), num_kv_heads=hkv,
                                         head_dim=d, page_size=page, dtype=DTYPE, device="cuda")
        ids = [cache.add_sequence() for _ in range(batch)]
        cache.append(0, ids, k, v, [n] * batch)
        dense = (q.view(batch, new, hq, d).transpose(1, 2), k.view(batch, n, hkv, d).transpose(1, 2),
                 v.view(batch, n, hkv, d).transpose(1, 2))
        return q, k, v, cache, ids, dense

    def paged(kv_read):
        return lambda q, k, v, cache, ids, dense: flashkernel.paged_prefill_attention(q, cache, 0, ids, [new] * batch,
                                                                                      kv_read=kv_read)

    sets = ctx.rotating(make, 3 * elem * d * batch * (new * hq + 2 * n * hkv))
    impls = {
        "flashkernel_paged_prefill": paged("auto"),
        "flashkernel_paged_prefill_pages": paged("pages"),
        "gather_then_attention": paged("gather"),
        "flashkernel_dense_prefill": lambda q, k, v, cache, ids, dense: flashkernel.flash_attention(*dense, causal=True),
        "flashkernel_varlen_contiguous": lambda q, k, v, cache, ids, dense: flashkernel.flash_attention_varlen(
            q, k, v, cu_q, cu_k, new, n, causal=True),
    }
    time_impls(ctx, OP, DTYPE, config, impls, sets, flops, io_bytes)
    del sets
    torch.cuda.empty_cache()


def run(ctx, quick: bool) -> None:
    bench_memory(ctx)
    bench_gather(ctx, quick)
    bench_decode(ctx, quick)
    for case in PREFILL_CASES:
        bench_prefill(ctx, *case)
