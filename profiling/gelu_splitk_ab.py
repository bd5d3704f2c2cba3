"""A/B of gelu_linear's cluster split-K (sm_90) on the mid-size shapes it is chosen for, and on the
96-tile shapes it is not: the library's choice (`auto`) against the unsplit 64x64 kernel
(`backend="sm80"`: the same kernel without the cluster), cuBLASLt's GELU_BIAS epilogue and eager
PyTorch, timed in turn for several rounds with the benchmark harness's timing (the device alone,
inputs rotated past L2). Writes <out>/<gpu-slug>/gelu_splitk_ab.csv, one row per (impl, config):
the median over the rounds of each round's median (p10/p90 and runs: over the rounds).

    PYTHONPATH=python FLASHKERNEL_LIB_DIR=build/python/flashkernel \\
        python3 profiling/gelu_splitk_ab.py --out /tmp/ab
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

# (M, K, N): 24 output tiles of 64 x 64 (split), then 96 (not split).
SHAPES = [(128, 3072, 768), (128, 768, 768), (64 + 1, 3072, 768), (512, 3072, 768), (128, 3072, 3072),
          (512, 768, 768), (128, 768, 3072)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    import flashkernel
    from flashkernel.bench.harness import BenchContext

    ctx = BenchContext(out_dir=args.out)
    ctx.target_seconds, ctx.min_runs = 0.03, 10
    impls = {
        "flashkernel_cuda": lambda x, w, b: flashkernel.gelu_linear(x, w, b, approximate="tanh"),
        "flashkernel_cuda_unsplit": lambda x, w, b: flashkernel.gelu_linear(x, w, b, approximate="tanh",
                                                                             backend="sm80"),
        "cublaslt_epilogue": lambda x, w, b: torch._addmm_activation(b, x, w.t(), use_gelu=True),
        "torch_eager": lambda x, w, b: F.gelu(F.linear(x, w, b), approximate="tanh"),
    }
    for dtype in (torch.float16, torch.bfloat16):
        for m, k, n in SHAPES:
            nbytes = 2 * (m * k + n * k + n + m * n)

            def make():
                return (torch.randn(m, k, device="cuda").to(dtype),
                        (torch.randn(n, k, device="cuda") * k ** -0.5).to(dtype),
                        torch.randn(n, device="cuda").to(dtype))

            sets = ctx.rotating(make, nbytes)
            medians = ctx.alternate("gelu_linear", impls, sets, dtype, f"M={m} K={k} N={n} act=tanh", args.rounds,
                                    flops=2.0 * m * n * k, bytes_moved=nbytes)
            base = medians["flashkernel_cuda"]
            print(f"{str(dtype):15s} M={m:4d} K={k:5d} N={n:5d} " + " ".join(
                f"{name}={v * 1e3:6.1f}us({v / base:4.2f})" for name, v in medians.items()), flush=True)
    print(ctx.write_csv("gelu_splitk_ab", ctx.rows))


if __name__ == "__main__":
    main()
