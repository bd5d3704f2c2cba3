"""The attention breadth of issue 21, measured: head dims outside the Hopper kernel's 64/128,
sliding windows and softcap (CSV `attention_head_dims`), and packed variable-length batches (CSV
`attention_varlen`).

attention_head_dims, configs "B H N d causal [window=L,R] [softcap=c]" (B*N = 16384, H*d = 2048 as
attention.csv's standard sweep), bfloat16:
  * d in {32, 80, 96, 256}, N in {1024, 4096, 8192}, causal 0/1: flashkernel_cuda (backend
    "auto"), flashkernel_cuda_sm80 / _sm90 (each kernel path forced: the portable kernel's extended
    instances and the Hopper kernel's, padded rows at 32/80/96), flashkernel_triton, sdpa_cudnn and
    sdpa_flash where they take the shape;
  * d = 128, N = 8192: a sliding window (1024, 0) and softcap 30 against our own dense causal run
    (flashkernel_dense_causal), which shows what skipping the masked key tiles buys, with each
    kernel path forced (flashkernel_cuda_sm80 / _sm90: the A/B of the Hopper kernel's windows).
attention_varlen, config "B H d causal lens=uniform(128,4096) seed=0 total=T": flashkernel_cuda
(one varlen call), flashkernel_cuda_sm80 / _sm90 (the same call forced onto each kernel path; sm90
is recorded as a failed row off Hopper), sdpa_padded (SDPA on the batch padded to the longest
sequence, without a padding mask, so its time is a lower bound), loop_per_sequence (one dense
flashkernel call per sequence) and flashkernel_dense (the dense kernel on B sequences of the mean
length: the same tokens and about the same work). TFLOP/s of every impl are counted on the real
tokens' work. (Prefill over a paged cache: kv_cache.csv, flashkernel.bench.ops.kv_cache.)
"""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashkernel
import flashkernel.triton


def _sdpa(backend, causal):
    def fn(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return fn


def time_impls(ctx, op, dtype, config, impls, sets, flops, io_bytes):
    for impl, fn in impls.items():
        try:
            timing = ctx.time(fn, sets)
            ctx.record(op, impl, dtype, config, timing, flops=flops, bytes_moved=io_bytes)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            ctx.record(op, impl, dtype, config, None, note="OOM")
        except (RuntimeError, ValueError) as e:  # a backend that rejects this shape or this GPU
            torch.cuda.empty_cache()
            ctx.record(op, impl, dtype, config, None, note=str(e).splitlines()[0][:120])


def planned_head_dims(quick: bool):
    lengths = [1024, 4096, 8192] if not quick else [4096]
    plan = [(d, n, causal, None, None) for d in (32, 80, 96, 256) for causal in (False, True) for n in lengths]
    plan += [(128, 8192, True, (1024, 0), None), (128, 8192, False, (1024, 1024), None),
             (128, 8192, True, None, 30.0)]
    return plan


def _head_dim_config(ctx, d, n, causal, window, softcap, dtype=torch.bfloat16):
    b, h = 16384 // n, 2048 // d
    config = f"B={b} H={h} N={n} d={d} causal={int(causal)}"
    if window is not None:
        config += f" window={window[0]},{window[1]}"
    if softcap is not None:
        config += f" softcap={softcap:g}"
    # Useful work of the visible (row, key) pairs: 2 flops per multiply-add, QK^T and PV.
    if window is None:
        pairs = n * (n + 1) / 2 if causal else n * n
    else:
        left, right = window
        right = 0 if causal else right
        pairs = sum(min(n - 1, i + right) - max(0, i - left) + 1 for i in range(n))
    flops = 4.0 * b * h * pairs * d
    elem = torch.tensor([], dtype=dtype).element_size()
    io_bytes = 4 * b * h * n * d * elem

    def make():
        return tuple(torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3))

    sets = ctx.rotating(make, 3 * b * h * n * d * elem)
    impls = {"flashkernel_cuda": lambda q, k, v: flashkernel.flash_attention(q, k, v, causal=causal, window=window,
                                                                             softcap=softcap)}
    if window is None and softcap is None:
        impls["flashkernel_triton"] = lambda q, k, v: flashkernel.triton.flash_attention(q, k, v, causal=causal)
        impls["sdpa_cudnn"] = _sdpa(SDPBackend.CUDNN_ATTENTION, causal)
        impls["sdpa_flash"] = _sdpa(SDPBackend.FLASH_ATTENTION, causal)
    else:
        impls["flashkernel_triton"] = lambda q, k, v: flashkernel.triton.flash_attention(
            q, k, v, causal=causal, window=window, softcap=softcap)
        impls["flashkernel_dense_causal"] = lambda q, k, v: flashkernel.flash_attention(q, k, v, causal=True)
    for backend in ("sm80", "sm90"):  # each kernel path forced (sm90: a failed row off Hopper)
        impls[f"flashkernel_cuda_{backend}"] = lambda q, k, v, backend=backend: flashkernel.flash_attention(
            q, k, v, causal=causal, window=window, softcap=softcap, backend=backend)
    time_impls(ctx, "attention_head_dims", dtype, config, impls, sets, flops, io_bytes)
    del sets
    torch.cuda.empty_cache()


def varlen_lengths(batch: int, seed: int = 0, lo: int = 128, hi: int = 4096) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(batch)]


def _varlen_config(ctx, batch, h, d, causal, dtype=torch.bfloat16):
    lens = varlen_lengths(batch)
    total, longest = sum(lens), max(lens)
    config = f"B={batch} H={h} d={d} causal={int(causal)} lens=uniform(128,4096) seed=0 total={total}"
    pairs = sum(n * (n + 1) / 2 if causal else n * n for n in lens)
    flops = 4.0 * h * pairs * d
    elem = torch.tensor([], dtype=dtype).element_size()
    io_bytes = 4 * total * h * d * elem
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()), dtype=torch.int32, device="cuda")
    mean = total // batch

    def make():
        q, k, v = (torch.randn(total, h, d, device="cuda", dtype=dtype) for _ in range(3))
        padded = [torch.zeros(batch, h, longest, d, device="cuda", dtype=dtype) for _ in range(3)]
        for t, p in zip((q, k, v), padded):
            for i, n in enumerate(lens):
                p[i, :, :n] = t[int(cu[i]):int(cu[i]) + n].transpose(0, 1)
        dense = [torch.randn(batch, h, mean, d, device="cuda", dtype=dtype) for _ in range(3)]
        return q, k, v, padded, dense

    sets = ctx.rotating(make, 3 * elem * h * d * (total + batch * longest + batch * mean))
    starts = [int(x) for x in cu.tolist()]

    def per_sequence(q, k, v, padded, dense):
        for i, n in enumerate(lens):
            s = slice(starts[i], starts[i] + n)
            flashkernel.flash_attention(q[s].transpose(0, 1)[None], k[s].transpose(0, 1)[None],
                                        v[s].transpose(0, 1)[None], causal=causal)

    impls = {
        "flashkernel_cuda": lambda q, k, v, padded, dense: flashkernel.flash_attention_varlen(
            q, k, v, cu, cu, longest, longest, causal=causal),
        # Each kernel path forced: on sm_90 the A/B of the Hopper varlen path against the portable one.
        "flashkernel_cuda_sm80": lambda q, k, v, padded, dense: flashkernel.flash_attention_varlen(
            q, k, v, cu, cu, longest, longest, causal=causal, backend="sm80"),
        "flashkernel_cuda_sm90": lambda q, k, v, padded, dense: flashkernel.flash_attention_varlen(
            q, k, v, cu, cu, longest, longest, causal=causal, backend="sm90"),
        "flashkernel_triton": lambda q, k, v, padded, dense: flashkernel.triton.flash_attention_varlen(
            q, k, v, cu, cu, longest, longest, causal=causal),
        "sdpa_padded": lambda q, k, v, padded, dense: F.scaled_dot_product_attention(*padded, is_causal=causal),
        "loop_per_sequence": per_sequence,
        "flashkernel_dense": lambda q, k, v, padded, dense: flashkernel.flash_attention(*dense, causal=causal),
    }
    time_impls(ctx, "attention_varlen", dtype, config, impls, sets, flops, io_bytes)
    del sets
    torch.cuda.empty_cache()


def planned_varlen(quick: bool):
    plan = [(_varlen_config, 16, 16, 128, causal) for causal in (False, True)]
    return plan + ([] if quick else [(_varlen_config, 64, 16, 64, True)])


class _Op:
    """One CSV's benchmark module interface (run, count_configs) over a plan."""

    def __init__(self, plan, bench):
        self.plan, self.bench = plan, bench

    def count_configs(self, quick: bool) -> int:
        return len(self.plan(quick))

    def run(self, ctx, quick: bool) -> None:
        saved = ctx.min_runs, ctx.target_seconds
        ctx.min_runs, ctx.target_seconds = 5, 0.03  # as attention.csv: many points, a few minutes
        try:
            for args in self.plan(quick):
                self.bench(ctx, *args)
        finally:
            ctx.min_runs, ctx.target_seconds = saved


head_dims = _Op(planned_head_dims, _head_dim_config)
varlen = _Op(planned_varlen, lambda ctx, config, *args: config(ctx, *args))
