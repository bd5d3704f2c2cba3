"""reduce_sum / reduce_max against torch eager, CUB (cub::DeviceReduce / DeviceSegmentedReduce, a
C++ benchmark: bench/cpp/reduce_cub_bench.cu) and the ceiling, a device copy of the same bytes.

GB/s counts bytes read (n * element size) for the reductions; device_copy's counts read + write,
so reduce GB/s / device_copy GB/s is the fraction of a copy's bandwidth the reduction reaches.
Config keys: `n=<elements> op=sum|max` (whole tensor) or `rows=<r> cols=<c> op=sum|max` (dim=-1).
"""
from __future__ import annotations

import torch

import flashkernel
import flashkernel.triton

FULL_SIZES = [10**3, 10**4, 10**5, 10**6, 10**7, 10**8, 10**9]
ROW_SHAPES = [(512, 2048), (4096, 4096), (65536, 128)]
OPS = {
    "sum": (flashkernel.reduce_sum, flashkernel.triton.reduce_sum, torch.sum),
    "max": (flashkernel.reduce_max, flashkernel.triton.reduce_max, torch.amax),
}


def _time_impls(ctx, dtype, config_base, dim, sets, nbytes):
    for op, (fk_cuda, fk_triton, eager) in OPS.items():
        config = f"{config_base} op={op}"
        if dim is None:
            impls = {"flashkernel_cuda": fk_cuda, "flashkernel_triton": fk_triton, "torch_eager": eager}
            for impl, fn in impls.items():
                ctx.record("reduce", impl, dtype, config, ctx.time(fn, sets), bytes_moved=nbytes)
        else:
            impls = {"flashkernel_cuda": lambda x, f=fk_cuda: f(x, -1),
                     "flashkernel_triton": lambda x, f=fk_triton: f(x, -1),
                     "torch_eager": lambda x, f=eager: f(x, -1)}
            for impl, fn in impls.items():
                ctx.record("reduce", impl, dtype, config, ctx.time(fn, sets), bytes_moved=nbytes)


def _time_copy(ctx, dtype, config_base, sets, nbytes):
    # The ceiling: copying the same bytes (read + write). Timed once, recorded under both ops'
    # configs so every reduce row has its ceiling in the same config.
    copy_sets = [(torch.empty_like(s[0]), s[0]) for s in sets]
    timing = ctx.time(lambda dst, src: dst.copy_(src), copy_sets)
    for op in OPS:
        ctx.record("reduce", "device_copy", dtype, f"{config_base} op={op}", timing, bytes_moved=2 * nbytes)
    del copy_sets


def _sizes(quick: bool) -> list[int]:
    return [10**6, 10**8] if quick else FULL_SIZES


def _row_shapes(quick: bool) -> list[tuple[int, int]]:
    return ROW_SHAPES[:1] if quick else ROW_SHAPES


def count_configs(quick: bool) -> int:
    """Configurations (dtype, config) run(ctx, quick) measures, for the progress display: every
    whole-tensor size in two dtypes and every row shape in fp16, each for sum and max (the C++
    benchmark's rows reuse these configs)."""
    return len(OPS) * (2 * len(_sizes(quick)) + len(_row_shapes(quick)))


def run(ctx, quick: bool) -> None:
    sizes = _sizes(quick)
    for dtype in (torch.float32, torch.float16):
        elem = torch.tensor([], dtype=dtype).element_size()
        for n in sizes:
            nbytes = n * elem
            sets = ctx.rotating(lambda: (torch.randn(n, device="cuda", dtype=dtype),), nbytes)
            _time_impls(ctx, dtype, f"n={n}", None, sets, nbytes)
            _time_copy(ctx, dtype, f"n={n}", sets, nbytes)
            del sets
            torch.cuda.empty_cache()
    dtype = torch.float16
    for rows, cols in _row_shapes(quick):
        nbytes = rows * cols * 2
        sets = ctx.rotating(lambda: (torch.randn(rows, cols, device="cuda", dtype=dtype),), nbytes)
        _time_impls(ctx, dtype, f"rows={rows} cols={cols}", -1, sets, nbytes)
        _time_copy(ctx, dtype, f"rows={rows} cols={cols}", sets, nbytes)
        del sets
    torch.cuda.empty_cache()
    ctx.cpp_bench("reduce_cub_bench", ["--quick"] if quick else [])
