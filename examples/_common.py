"""Shared by the Python examples: the GPU check, the flashkernel import, timing and the report."""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

import torch

NO_GPU = "this example needs a CUDA GPU (none is visible)"
_CHECKOUT_PYTHON = Path(__file__).resolve().parents[1] / "python"


def add_common_args(parser: argparse.ArgumentParser, dtypes=("float16", "bfloat16")) -> None:
    """--dtype (first choice is the default; none when dtypes is empty) and --iters."""
    if dtypes:
        parser.add_argument("--dtype", choices=dtypes, default=dtypes[0], help="default: %(default)s")
    parser.add_argument("--iters", type=int, default=50, help="timed repetitions (default: %(default)s)")


def require_gpu(prog: str):
    """Exits with status 2 and one line unless a CUDA GPU is visible; returns the flashkernel module."""
    if not torch.cuda.is_available():
        print(f"{prog}: {NO_GPU}", file=sys.stderr)
        sys.exit(2)
    if importlib.util.find_spec("flashkernel") is None and _CHECKOUT_PYTHON.is_dir():
        sys.path.insert(0, str(_CHECKOUT_PYTHON))  # a source checkout run without PYTHONPATH=python
    try:
        import flashkernel
    except ImportError as e:  # e.g. the op library is not built, or was built against another torch
        sys.exit(f"{prog}: cannot import flashkernel: {e}")
    major, minor = torch.cuda.get_device_capability()
    print(f"GPU: {torch.cuda.get_device_name()} (compute capability {major}.{minor})")
    torch.manual_seed(0)
    return flashkernel


def time_ms(fn, iters: int, warmup: int = 3) -> float:
    """Median milliseconds of fn() on the current stream (CUDA events around each call)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(iters, 1)):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _tensors(x):
    return list(x) if isinstance(x, (tuple, list)) else [x]


def compare(fk_fn, torch_fn, iters: int, torch_name: str = "PyTorch") -> float:
    """Runs both, prints the max abs difference of their outputs (tensors or tuples of tensors) and
    their median times; returns the difference."""
    got, want = _tensors(fk_fn()), _tensors(torch_fn())
    err = max((g.float() - w.float()).abs().max().item() for g, w in zip(got, want))
    scale = max(w.float().abs().max().item() for w in want)
    print(f"max |flashkernel - {torch_name}| = {err:.3e}  (largest |{torch_name}| value: {scale:.3e})")
    t_fk, t_ref = time_ms(fk_fn, iters), time_ms(torch_fn, iters)
    print(f"median time: flashkernel {t_fk:.4f} ms, {torch_name} {t_ref:.4f} ms  ({t_ref / t_fk:.2f}x)")
    return err
