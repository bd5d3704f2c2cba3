"""flash_attention against everything a PyTorch user has: SDPA's FlashAttention-2, cuDNN and
default backends, the materialized eager softmax(QK^T)V and that function under torch.compile.

Sweeps (configs "B H N d causal"):
  * standard: B*N = 16384, H*d = 2048, N = 512..16384, d in {64, 128}, causal 0/1, bfloat16 and
    float16;
  * seed grid: N in {512, 1024, 2048, 4096}, B in {1, 4, 8}, H = 8, d in {64, 128}, bfloat16,
    non-causal, for the three fused kernels (flashkernel CUDA and Triton, sdpa_flash).
torch_compile runs only at N = 4096, d = 128 (each new shape recompiles, tens of seconds each).
Peak memory per impl (extra column peak_mem_mb: allocations above the inputs) at N = 4096 and
16384; an impl that runs out of memory is recorded with an empty time and note "OOM".
"""
from __future__ import annotations

import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashkernel
import flashkernel.triton


def eager_attention(q, k, v, causal):
    """softmax(q k^T / sqrt(d)) v with the N x N scores materialized (what a plain PyTorch
    implementation does)."""
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if causal:
        n_q, n_k = q.shape[2], k.shape[2]
        mask = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


_compiled_eager = None


def _impls(causal: bool, with_compile: bool, baselines: bool):
    global _compiled_eager

    def backend(b):
        def fn(q, k, v):
            with sdpa_kernel(b):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return fn

    impls = {
        # auto: the Hopper kernel on sm_90, the portable one elsewhere
        "flashkernel_cuda": lambda q, k, v: flashkernel.flash_attention(q, k, v, causal=causal),
        "flashkernel_cuda_sm80": lambda q, k, v: flashkernel.flash_attention(q, k, v, causal=causal, backend="sm80"),
        "flashkernel_triton": lambda q, k, v: flashkernel.triton.flash_attention(q, k, v, causal=causal),
        "sdpa_flash": backend(SDPBackend.FLASH_ATTENTION),
    }
    if baselines:
        impls["sdpa_cudnn"] = backend(SDPBackend.CUDNN_ATTENTION)
        impls["sdpa_default"] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        impls["torch_eager"] = lambda q, k, v: eager_attention(q, k, v, causal)
    if with_compile:
        if _compiled_eager is None:
            _compiled_eager = torch.compile(eager_attention, dynamic=False)
        impls["torch_compile"] = lambda q, k, v: _compiled_eager(q, k, v, causal)
    return impls


def _peak_mb(fn, args) -> float:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn(*args)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def problem(ctx, dtype, b, h, n, d, causal):
    """One configuration of the sweep: its config string (the CSV's), useful FLOPs, bytes moved and
    the rotating q, k, v input sets. Shared with profiling/attention_ab.py so its rows pair with
    attention.csv's."""
    config = f"B={b} H={h} N={n} d={d} causal={int(causal)}"
    # Useful work: QK^T and PV, 2 flops per multiply-add each; causal does about half.
    flops = 4.0 * b * h * n * n * d * (0.5 if causal else 1.0)
    elem = torch.tensor([], dtype=dtype).element_size()
    io_bytes = 4 * b * h * n * d * elem  # read q, k, v; write out

    def make():
        return tuple(torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3))

    return config, flops, io_bytes, ctx.rotating(make, 3 * b * h * n * d * elem)


def _bench_config(ctx, dtype, b, h, n, d, causal, *, with_compile=False, baselines=True, peak=False):
    config, flops, io_bytes, sets = problem(ctx, dtype, b, h, n, d, causal)
    for impl, fn in _impls(causal, with_compile, baselines).items():
        try:
            mem = _peak_mb(fn, sets[0]) if peak else None
            timing = ctx.time(fn, sets)
            row = ctx.record("attention", impl, dtype, config, timing, flops=flops, bytes_moved=io_bytes)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            row = ctx.record("attention", impl, dtype, config, None, note="OOM")
            mem = None
        except RuntimeError as e:  # e.g. a backend that does not support this card or shape
            torch.cuda.empty_cache()
            row = ctx.record("attention", impl, dtype, config, None, note=str(e).splitlines()[0][:120])
            mem = None
        if peak:
            row["peak_mem_mb"] = "" if mem is None else f"{mem:.1f}"
    del sets
    torch.cuda.empty_cache()


# FLASHKERNEL_ATTENTION_BENCH_BUDGET_S: a soft limit in seconds; configurations not started by then
# are skipped and listed (the harness writes the CSV only at the end, so a killed run loses all).
_DEADLINE = [math.inf]


def _due(what: str) -> bool:
    if time.time() < _DEADLINE[0]:
        return True
    print(f"  (attention bench: time budget spent, skipping {what})", file=sys.stderr)
    return False


def planned(quick: bool) -> list[tuple[str, tuple, dict]]:
    """The configurations of a sweep, in order: (label, _bench_config's positional arguments after
    ctx, its keyword arguments)."""
    plan = []
    lengths = [512, 1024, 2048, 4096, 8192, 16384] if not quick else [1024, 4096]
    for d in (64, 128):
        for causal in (False, True):
            for n in lengths:
                plan.append((f"bf16 d={d} causal={causal} N={n}",
                             (torch.bfloat16, 16384 // n, 2048 // d, n, d, causal),
                             dict(with_compile=(n == 4096 and d == 128 and not quick), peak=n in (4096, 16384))))
    for d in (64, 128):
        for causal in (False, True):
            for n in (lengths if not quick else [4096]):
                plan.append((f"fp16 d={d} causal={causal} N={n}",
                             (torch.float16, 16384 // n, 2048 // d, n, d, causal), {}))
    if not quick:
        for d in (64, 128):
            for b in (1, 4, 8):
                for n in (512, 1024, 2048, 4096):
                    plan.append((f"seed grid B={b} N={n} d={d}", (torch.bfloat16, b, 8, n, d, False),
                                 dict(baselines=False)))
    return plan


def count_configs(quick: bool) -> int:
    """Configurations run(ctx, quick) measures, for the progress display."""
    return len(planned(quick))


def run(ctx, quick: bool) -> None:
    budget = float(os.environ.get("FLASHKERNEL_ATTENTION_BENCH_BUDGET_S", "inf"))
    _DEADLINE[0] = time.time() + budget
    # Fewer runs per point than the harness default: ~200 timed points must fit a few minutes.
    saved = ctx.min_runs, ctx.target_seconds
    ctx.min_runs, ctx.target_seconds = 5, 0.03
    try:
        for label, args, kwargs in planned(quick):
            if _due(label):
                _bench_config(ctx, *args, **kwargs)
    finally:
        ctx.min_runs, ctx.target_seconds = saved
