"""The paged-prefill rows of the kv_cache benchmark alone (its PREFILL_CASES, the same impls and
timing), for an A/B of the paged kernel without the whole sweep: writes
<out>/<gpu-slug>/kv_cache_prefill.csv and prints each row.

    PYTHONPATH=python FLASHKERNEL_LIB_DIR=build/python/flashkernel \\
        python3 profiling/paged_prefill_rows.py --out /tmp/prefill
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from flashkernel.bench.harness import BenchContext
    from flashkernel.bench.ops import kv_cache

    ctx = BenchContext(out_dir=args.out)
    for case in kv_cache.PREFILL_CASES:
        kv_cache.bench_prefill(ctx, *case)
    path = ctx.write_csv("kv_cache_prefill", ctx.rows)
    print(f"{ctx.gpu}, commit {ctx.commit}: {path}")
    for row in ctx.rows:
        print(f"{row['impl']:34s} {row['config']:72s} {row.get('median_ms', row.get('note', ''))}")


if __name__ == "__main__":
    main()
