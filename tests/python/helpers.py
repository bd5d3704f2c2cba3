"""Shared test helpers: fresh random inputs, poisoned outputs, the tolerance rule, and the
device the Triton lane runs on."""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

gpu = pytest.mark.gpu
triton_twin = pytest.mark.triton


def triton_device() -> str:
    """Where Triton twins run: the CPU under the interpreter, else the GPU."""
    return "cpu" if TRITON_INTERPRET else "cuda"


def fresh_generator(device: str = "cpu") -> tuple[torch.Generator, int]:
    """A generator with a new seed each call (inputs differ run to run); the seed is returned so a
    failing assertion can print it."""
    seed = int.from_bytes(os.urandom(4), "little")
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g, seed


def randn(shape, dtype=torch.float32, device="cuda", scale=1.0) -> torch.Tensor:
    g, _ = fresh_generator("cpu")
    return (torch.randn(shape, generator=g, dtype=torch.float32) * scale).to(dtype=dtype, device=device)


def poisoned(shape, dtype, device="cuda") -> torch.Tensor:
    """A tensor full of NaN: anything a kernel forgets to write stays NaN and fails the check."""
    size = (shape,) if isinstance(shape, int) else tuple(shape)
    return torch.full(size, float("nan"), dtype=dtype, device=device)


def rounding_rtol(dtype: torch.dtype) -> float:
    """Half an ulp at 1.0 plus slack: the error of one rounding to `dtype`."""
    return {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]


def max_rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    ref64 = ref.double()
    denom = ref64.abs().max().clamp_min(1e-30)
    return ((out.double() - ref64).abs().max() / denom).item()


def interpreter_rounding_slack(dtype: torch.dtype) -> float:
    """Triton's CPU interpreter converts fp32 to bf16 by truncation, not round-to-nearest (checked:
    every one of 1024 random values matched truncation, about half differed from torch's rounding),
    so each bf16 rounding there can cost a whole ulp instead of half of one. Error bounds written
    against torch's rounding get this factor in the interpreter lane only; the GPU lane keeps 1."""
    return 2.0 if TRITON_INTERPRET and dtype == torch.bfloat16 else 1.0


def assert_within_torch_error(out, ref_hi, torch_lowp, factor=2.0, floor=1e-5, what=""):
    """The tolerance rule for ops PyTorch also computes in low precision (FlashAttention's rule):
    our max abs error against a high-precision reference is at most `factor` times PyTorch's own
    low-precision error against it, plus a small floor. NaN never passes."""
    assert not torch.isnan(out).any(), f"{what}: output has NaN"
    factor *= interpreter_rounding_slack(out.dtype)
    ours = (out.double() - ref_hi.double()).abs().max().item()
    theirs = (torch_lowp.double() - ref_hi.double()).abs().max().item()
    assert ours <= factor * theirs + floor, f"{what}: max error {ours:.3e} > {factor} x torch's {theirs:.3e} + {floor}"


def load_module(name, path):
    """A module by file path (scripts/, profiling/): checks that need neither the compiled library
    nor the package."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module
