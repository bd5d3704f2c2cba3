"""Quick timing of gelu_linear against cuBLASLt's fused GELU_BIAS epilogue
(torch._addmm_activation) and a plain F.linear at the large-M goal shapes: medians of CUDA-event
timings, one table. For iterating on the Hopper kernel; the committed numbers come from
`flashkernel bench gelu_linear`.
Usage: python scripts/dev/gelu_linear_quick.py [MxKxN ...]  (shapes given: compares the automatic
choice with the sm80 kernels only)"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import flashkernel
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from _common import time_ms  # noqa: E402  (examples/_common.py: the examples' timer)

SHAPES = [(8192, 768, 3072), (8192, 3072, 768), (2048, 4096, 16384), (2048, 3072, 3072), (2048, 768, 3072)]  # (M, K, N)


def main():
    print(torch.cuda.get_device_name())
    shapes = [tuple(int(v) for v in a.split("x")) for a in sys.argv[1:]] or SHAPES
    variants = ("sm80",) if sys.argv[1:] else ("sm90_wide", "sm90_mid", "sm90_narrow", "sm90_pingpong")
    names = ("fk",) + variants + ("cublaslt", "linear", "eager")
    print(f"{'shape (M,K,N) dtype':>30} " + " ".join(f"{n[-9:]:>9}" for n in names) + "  (TFLOP/s)  fk/cublaslt")
    for dtype in (torch.bfloat16, torch.float16):
        for m, k, n in shapes:
            torch.manual_seed(0)
            x = torch.randn(m, k, device="cuda", dtype=dtype)
            w = torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5
            b = torch.randn(n, device="cuda", dtype=dtype)
            def fk(backend="auto"):
                return flashkernel.gelu_linear(x, w, b, approximate="tanh", backend=backend)

            impls = {
                "fk": fk,
                **{v: (lambda v=v: fk(v)) for v in variants},
                "cublaslt": lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True),
                "linear": lambda: F.linear(x, w, b),
                "eager": lambda: F.gelu(F.linear(x, w, b), approximate="tanh"),
            }
            ref = impls["cublaslt"]().float()
            err = {name: (impls[name]().float() - ref).abs().max().item() for name in ("fk",) + variants}
            flops = 2 * m * n * k
            tf = {name: flops / time_ms(fn, 30) / 1e9 for name, fn in impls.items()}
            label = f"({m},{k},{n}) {str(dtype).split('.')[-1]}"
            print(f"{label:>30} " + " ".join(f"{tf[nm]:9.1f}" for nm in names)
                  + f"  {tf['fk'] / tf['cublaslt']:.3f}  max|fk-cublaslt| "
                  + " ".join(f"{nm}={e:.3g}" for nm, e in err.items()))


if __name__ == "__main__":
    main()
