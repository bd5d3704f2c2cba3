"""A/B of the Hopper attention kernel against SDPA's cuDNN and FlashAttention-2 backends on the
standard sweep's shapes (B*N = 16384, H*d = 2048), each implementation timed in turn for several
rounds with the benchmark harness's timing (the device alone, inputs rotated past L2). For an A/B
of a kernel change, run it on both builds of the same card: the cuDNN rows of the two runs say how
much the card itself moved. Writes <out>/<gpu-slug>/attention_ab.csv, one row per (impl, config):
the median over the rounds of each round's median.

    PYTHONPATH=python FLASHKERNEL_LIB_DIR=build/python/flashkernel \\
        python3 profiling/attention_ab.py --out /tmp/ab [--head-dims 64 128] [--seqs 512 4096] [--impls ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--seqs", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    ap.add_argument("--impls", nargs="+", default=["flashkernel_cuda", "sdpa_cudnn", "sdpa_flash"])
    args = ap.parse_args()

    from flashkernel.bench.harness import BenchContext
    from flashkernel.bench.ops.attention import _impls, problem

    ctx = BenchContext(out_dir=args.out)
    ctx.target_seconds, ctx.min_runs = 0.05, 10
    all_impls = {causal: _impls(causal, with_compile=False, baselines=True) for causal in (False, True)}
    impls_of = {causal: {name: all_impls[causal][name] for name in args.impls} for causal in (False, True)}
    for dtype in (getattr(torch, name) for name in args.dtypes):
        for d in args.head_dims:
            for n in args.seqs:
                b, h = max(1, 16384 // n), 2048 // d
                for causal in (False, True):
                    config, flops, io_bytes, sets = problem(ctx, dtype, b, h, n, d, causal)
                    ms = ctx.alternate("attention", impls_of[causal], sets, dtype, config, args.rounds, flops=flops,
                                       bytes_moved=io_bytes)
                    print(f"{str(dtype):15s} {config:34s} " + " ".join(
                        f"{name}={v:7.4f}ms" for name, v in ms.items())
                        + (f"  cudnn/fk={ms['sdpa_cudnn'] / ms['flashkernel_cuda']:.3f}"
                           if {"sdpa_cudnn", "flashkernel_cuda"} <= ms.keys() else ""), flush=True)
                    del sets
    print(ctx.write_csv("attention_ab", ctx.rows))


if __name__ == "__main__":
    main()
