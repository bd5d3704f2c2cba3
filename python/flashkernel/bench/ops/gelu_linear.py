"""gelu_linear (tanh GeLU) against unfused PyTorch, cuBLASLt's fused GELU_BIAS epilogue,
torch.compile, and the GEMM alone (linear_only: the floor a fused epilogue can approach)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import flashkernel
import flashkernel.triton

MAIN_M = [1, 16, 128, 512, 2048, 8192]
MAIN_KN = [(768, 3072), (3072, 768), (4096, 16384)]
# The seed grid: M 128/512/2048 x N 768/3072 x K 768/3072 (four of its (K, N) pairs are above).
SEED_M = [128, 512, 2048]
SEED_KN = [(k, n) for k in (768, 3072) for n in (768, 3072)]


def configs(quick: bool) -> list[tuple[int, int, int]]:
    if quick:
        return [(1, 768, 3072), (16, 4096, 16384), (512, 3072, 768), (8192, 768, 3072), (2048, 4096, 16384)]
    seen, out = set(), []
    for m, (k, n) in [(m, kn) for m in MAIN_M for kn in MAIN_KN] + [(m, kn) for m in SEED_M for kn in SEED_KN]:
        if (m, k, n) not in seen:
            seen.add((m, k, n))
            out.append((m, k, n))
    return out


DTYPES = (torch.float16, torch.bfloat16)


def count_configs(quick: bool) -> int:
    """Configurations (dtype, M, K, N) run(ctx, quick) measures, for the progress display."""
    return len(DTYPES) * len(configs(quick))


def _eager(x, w, b):
    return F.gelu(F.linear(x, w, b), approximate="tanh")


def run(ctx, quick: bool) -> None:
    # ~300 (impl, config) points: a shorter per-point budget keeps the sweep to a few minutes.
    saved = (ctx.target_seconds, ctx.min_runs)
    ctx.target_seconds, ctx.min_runs = 0.04, 10
    # One dynamic-shape compile per dtype instead of one per shape (and no recompile limit hit).
    compiled = torch.compile(_eager, dynamic=True)
    # The portable mma.sync kernels on the same card (what non-Hopper GPUs run), timed for M > 64.
    def sm80_kernels(x, w, b):
        return flashkernel.gelu_linear(x, w, b, approximate="tanh", backend="sm80")

    impls = {
        "flashkernel_cuda": lambda x, w, b: flashkernel.gelu_linear(x, w, b, approximate="tanh"),
        "flashkernel_triton": lambda x, w, b: flashkernel.triton.gelu_linear(x, w, b, approximate="tanh"),
        "torch_eager": _eager,
        # cuBLASLt's GEMM with the bias + GELU (tanh form) epilogue fused.
        "cublaslt_epilogue": lambda x, w, b: torch._addmm_activation(b, x, w.t(), use_gelu=True),
        "torch_compile": compiled,
        "linear_only": lambda x, w, b: F.linear(x, w, b),
    }
    try:
        for dtype in DTYPES:
            for m, k, n in configs(quick):
                config = f"M={m} K={k} N={n} act=tanh"
                nbytes = 2 * (m * k + n * k + n + m * n)  # each input read once, output written once

                def make():
                    return (torch.randn(m, k, device="cuda").to(dtype),
                            (torch.randn(n, k, device="cuda") * k ** -0.5).to(dtype),
                            torch.randn(n, device="cuda").to(dtype))

                sets = ctx.rotating(make, nbytes)
                for impl, fn in impls.items():
                    try:
                        timing = ctx.time(fn, sets)
                    except Exception as e:  # noqa: BLE001 - a baseline that cannot run is recorded, not fatal
                        ctx.record("gelu_linear", impl, dtype, config, None, note=f"{type(e).__name__}: {e}"[:200])
                        continue
                    ctx.record("gelu_linear", impl, dtype, config, timing, flops=2.0 * m * n * k, bytes_moved=nbytes)
                if m > 64 and torch.cuda.get_device_capability()[0] == 9:
                    # The portable mma.sync kernels on the same card (what non-Hopper GPUs run).
                    timing = ctx.time(sm80_kernels, sets)
                    ctx.record("gelu_linear", "flashkernel_cuda_sm80", dtype, config, timing,
                               flops=2.0 * m * n * k, bytes_moved=nbytes)
                del sets
                torch.cuda.empty_cache()
                # Rows so far, rewritten after every config: an interrupted sweep keeps its results.
                ctx.write_csv("gelu_linear", [r for r in ctx.rows if r["op"] == "gelu_linear"])
    finally:
        ctx.target_seconds, ctx.min_runs = saved
