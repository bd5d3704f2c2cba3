"""Paged decode attention: every loop variant (PagedDecodeVariant) against SDPA over a contiguous
cache and a device copy of the same K/V bytes, with the benchmark harness's timer (rotating
inputs, spin-ahead CUDA events). For choosing the default variant; the committed numbers come
from `flashkernel bench kv_cache`.
Usage: python scripts/dev/kv_decode_quick.py [--quick] [--variants -1,3,4,5]"""
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import flashkernel  # noqa: F401  (registers the ops)
from flashkernel.bench.harness import BenchContext
from flashkernel.bench.ops.kv_cache import D, DTYPE, _filled_cache


def main():
    args = sys.argv[1:]
    variants = [-1, 0, 3, 4, 5]
    if "--variants" in args:
        variants = [int(v) for v in args[args.index("--variants") + 1].split(",")]
    quick = "--quick" in args
    ctx = BenchContext(Path(tempfile.mkdtemp()), quick=True, min_runs=10, max_runs=50, target_seconds=0.1)
    hq = 32
    cases = [(b, c, hkv, 16) for b in (1, 16, 64) for c in (512, 4096, 32768) for hkv in (32, 8, 4)]
    cases += [(16, 4096, 8, 256), (16, 32768, 8, 256), (64, 4096, 32, 256), (64, 4096, 8, 256)]
    cases += [(1, 32768, 2, 16), (16, 4096, 2, 16), (64, 4096, 2, 16)]  # groups of 16
    if quick:
        cases = [(16, 4096, 8, 16), (64, 4096, 8, 16), (1, 32768, 8, 16), (16, 32768, 32, 16), (16, 4096, 8, 256)]
    budget = 0.25 * torch.cuda.get_device_properties(0).total_memory
    print(torch.cuda.get_device_name(), f"{torch.cuda.get_device_properties(0).multi_processor_count} SMs")
    names = [f"v{v}" for v in variants] + ["sdpa", "copy"]
    print(f"{'config':>36} " + " ".join(f"{n:>8}" for n in names) + "   (GB/s of K/V read; !: differs from sdpa)")
    for batch, seq_len, hkv, page in cases:
        kv_bytes = batch * seq_len * hkv * D * 2 * 2
        if kv_bytes > budget:
            continue
        cfg = f"b={batch} ctx={seq_len} {hq}/{hkv} page={page}"

        def make_paged():
            cache, ids = _filled_cache(batch, seq_len, hkv, page)
            table, lens = cache.page_table(ids, 0)
            return torch.randn(batch, hq, D, device="cuda", dtype=DTYPE), cache.pool, table, lens

        sets = ctx.rotating(make_paged, kv_bytes)
        q, pool, table, lens = sets[0]
        # The reference: SDPA in fp32 over this set's cache gathered to contiguous K/V, one sequence
        # at a time (the whole batch in fp32 does not fit at batch 64, context 32768).
        ref = torch.empty(batch, hq, D, device="cuda")
        for b in range(batch):
            k, v = torch.ops.flashkernel.kv_cache_gather(pool, 0, table[b], seq_len)
            ref[b] = F.scaled_dot_product_attention(q[b].unsqueeze(1).float(), k.float(), v.float(),
                                                    enable_gqa=hq != hkv).squeeze(1)
            del k, v
        row = []
        for v in variants:
            def fn(q, pool, table, lens, v=v):
                return torch.ops.flashkernel.paged_decode_attention(q, pool, 0, table, lens, seq_len,
                                                                    check_indices=False, variant=v)
            err = (fn(q, pool, table, lens).float() - ref).abs().max().item()
            t = ctx.time(fn, sets)
            row.append(f"{kv_bytes / t.median_ms / 1e6:7.0f}{'!' if err > 2e-2 else ' '}")
        del sets
        torch.cuda.empty_cache()
        if page == 16:
            csets = ctx.rotating(lambda: (torch.randn(batch, hq, 1, D, device="cuda", dtype=DTYPE),
                                          torch.randn(batch, hkv, seq_len, D, device="cuda", dtype=DTYPE),
                                          torch.randn(batch, hkv, seq_len, D, device="cuda", dtype=DTYPE)), kv_bytes)
            t = ctx.time(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=hq != hkv), csets)
            row.append(f"{kv_bytes / t.median_ms / 1e6:7.0f} ")
            del csets
        else:
            row.append(f"{'-':>8}")
        n = kv_bytes // 4
        dsets = ctx.rotating(lambda: (torch.empty(n, device="cuda", dtype=DTYPE),
                                      torch.randn(n, device="cuda", dtype=DTYPE)), kv_bytes)
        t = ctx.time(lambda dst, src: dst.copy_(src), dsets)
        row.append(f"{kv_bytes / t.median_ms / 1e6:7.0f} ")
        del dsets
        torch.cuda.empty_cache()
        print(f"{cfg:>36} " + " ".join(f"{x:>8}" for x in row), flush=True)


if __name__ == "__main__":
    main()
