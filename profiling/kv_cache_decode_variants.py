"""A/B timing of the paged decode kernel's loop variants on the issue's goal shapes.

    python profiling/kv_cache_decode_variants.py [VARIANT]   (PagedDecodeVariant: 0-3; default: the automatic choice)

Prints one line per shape: variant, time, K/V GB/s, and the ratio to a device copy moving the
same bytes (read + write = K/V bytes), all measured in this process.
"""
import sys
from pathlib import Path

import torch

import flashkernel  # noqa: F401
from flashkernel.bench.harness import BenchContext
from flashkernel.bench.ops.kv_cache import D, DTYPE, _filled_cache

SHAPES = [(16, 4096, 32), (16, 4096, 8), (16, 32768, 32), (16, 32768, 8), (64, 4096, 32), (64, 4096, 8),
          (64, 32768, 8), (1, 32768, 8), (1, 4096, 32)]


def main() -> int:
    variant = int(sys.argv[1]) if len(sys.argv) > 1 else -1
    ctx = BenchContext(out_dir=Path("/nonexistent"))
    for batch, seq_len, hkv in SHAPES:
        kv_bytes = batch * seq_len * hkv * D * 4

        def make():
            cache, ids = _filled_cache(batch, seq_len, hkv, 16)
            table, lens = cache.page_table(ids, 0)
            return torch.randn(batch, 32, D, device="cuda", dtype=DTYPE), cache.pool, table, lens

        sets = ctx.rotating(make, kv_bytes)
        t = ctx.time(lambda q, pool, table, lens: torch.ops.flashkernel.paged_decode_attention(
            q, pool, 0, table, lens, seq_len, check_indices=False, variant=variant), sets)
        del sets
        n = kv_bytes // 4
        csets = ctx.rotating(lambda: (torch.empty(n, device="cuda", dtype=DTYPE),
                                      torch.randn(n, device="cuda", dtype=DTYPE)), kv_bytes)
        tc = ctx.time(lambda dst, src: dst.copy_(src), csets)
        del csets
        torch.cuda.empty_cache()
        print(f"variant={variant} batch={batch} ctx={seq_len} hq/hkv=32/{hkv}: {t.median_ms:.4f} ms "
              f"{kv_bytes / t.median_ms / 1e6:.0f} GB/s  vs copy {tc.median_ms / t.median_ms:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
