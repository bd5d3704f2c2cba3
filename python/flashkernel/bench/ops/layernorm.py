"""add_layernorm and add_rms_norm (residual add + norm, writing both the sum and the normalized
rows) against: the Triton twin, torch eager (an add and the norm: separate kernels), torch.compile
of the same expression, Liger-Kernel's norm after a separate add (when the package is importable)
and a device copy of the same bytes (the ceiling).
Bytes moved: read x and residual, write the sum and out (+ the [C] vectors)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import flashkernel
import flashkernel.triton

OP = "layernorm"
EPS = {"add_layernorm": 1e-5, "add_rms_norm": 1e-6}


def _torch_layernorm(x, r, w, lb):
    s = x + r
    return F.layer_norm(s, (s.shape[-1],), w, lb, EPS["add_layernorm"]), s


def _torch_rms_norm(x, r, w, lb):
    s = x + r
    return F.rms_norm(s, (s.shape[-1],), w, EPS["add_rms_norm"]), s


def _liger_impls():
    """Liger-Kernel's forward functions (the add done by torch, as a Liger user would), or {}."""
    try:
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
    except ImportError:
        return {}

    def layernorm(x, r, w, lb):
        s = x + r
        return LigerLayerNormFunction.apply(s, w, lb, EPS["add_layernorm"]), s

    def rms_norm(x, r, w, lb):
        s = x + r
        return LigerRMSNormFunction.apply(s, w, EPS["add_rms_norm"]), s

    return {"add_layernorm": layernorm, "add_rms_norm": rms_norm}


def configs(quick: bool):
    widths = (768, 1024, 2048, 4096, 8192)
    rows = (1, 8, 4096, 16384) if not quick else (1, 4096, 16384)
    for op in ("add_layernorm", "add_rms_norm"):
        for n in rows:
            for cols in widths:
                yield op, n, cols


DTYPES = (torch.float16, torch.bfloat16)


def count_configs(quick: bool) -> int:
    """Configurations (dtype, op, rows, cols) run(ctx, quick) measures, for the progress display."""
    return len(DTYPES) * len(list(configs(quick)))


def run(ctx, quick: bool) -> None:
    liger = _liger_impls()
    ours = {
        "add_layernorm": {
            "flashkernel_cuda": lambda x, r, w, lb: flashkernel.add_layernorm(x, r, weight=w, ln_bias=lb),
            "flashkernel_triton": lambda x, r, w, lb: flashkernel.triton.add_layernorm(x, r, weight=w, ln_bias=lb),
        },
        "add_rms_norm": {
            "flashkernel_cuda": lambda x, r, w, lb: flashkernel.add_rms_norm(x, r, weight=w),
            "flashkernel_triton": lambda x, r, w, lb: flashkernel.triton.add_rms_norm(x, r, weight=w),
        },
    }
    eager = {"add_layernorm": _torch_layernorm, "add_rms_norm": _torch_rms_norm}
    compiled = {op: torch.compile(fn) for op, fn in eager.items()}
    for dtype in DTYPES:
        elem = torch.finfo(dtype).bits // 8
        for op, rows, cols in configs(quick):
            nbytes = 4 * rows * cols * elem + 2 * cols * elem

            def make():
                return (torch.randn(rows, cols, device="cuda", dtype=dtype),
                        torch.randn(rows, cols, device="cuda", dtype=dtype),
                        torch.randn(cols, device="cuda", dtype=dtype),
                        torch.randn(cols, device="cuda", dtype=dtype))

            sets = ctx.rotating(make, nbytes)
            cfg = f"op={op} rows={rows} cols={cols}"
            impls = dict(ours[op], torch_eager=eager[op], torch_compile=compiled[op])
            if op in liger:
                impls["liger"] = liger[op]
            for impl, fn in impls.items():
                ctx.record(OP, impl, dtype, cfg, ctx.time(fn, sets), bytes_moved=nbytes)
            del sets
            # The ceiling: the same bytes, half read and half written, by one device copy.
            half = nbytes // (2 * elem)
            copy_sets = ctx.rotating(lambda: (torch.empty(half, dtype=dtype, device="cuda"),
                                              torch.randn(half, dtype=dtype, device="cuda")), nbytes)
            ctx.record(OP, "device_copy", dtype, cfg, ctx.time(lambda dst, src: dst.copy_(src), copy_sets),
                       bytes_moved=nbytes)
            del copy_sets
