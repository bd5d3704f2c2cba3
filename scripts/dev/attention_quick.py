"""Quick timing of the attention kernel paths against SDPA on the standard sweep's shapes
(B*N = 16384, H*d = 2048): medians of CUDA-event timings, one table. For iterating on a kernel;
the committed numbers come from `flashkernel bench attention`.
Usage: python scripts/dev/attention_quick.py [N ...] [--impls sm90,sdpa_cudnn] [--d 128]"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashkernel
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from _common import time_ms  # noqa: E402  (examples/_common.py: the examples' timer)


def sdpa(backend, causal):
    def fn(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return fn


def main():
    args = sys.argv[1:]
    only, dims = None, (128, 64)
    if "--impls" in args:
        i = args.index("--impls")
        only = args[i + 1].split(",")
        del args[i:i + 2]
    if "--d" in args:
        i = args.index("--d")
        dims = (int(args[i + 1]),)
        del args[i:i + 2]
    lengths = [int(a) for a in args] or [1024, 4096, 8192]
    names = [n for n in ("sm80", "sm90", "sdpa_flash", "sdpa_cudnn") if only is None or n in only]
    print(torch.cuda.get_device_name())
    print(f"{'config':>28} " + " ".join(f"{n:>12}" for n in names) + "   (TFLOP/s)")
    for dtype in (torch.bfloat16, torch.float16):
        for d in dims:
            for n in lengths:
                for causal in (False, True):
                    b, h = max(1, 16384 // n), 2048 // d
                    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3))
                    flops = 4 * b * h * n * n * d / (2 if causal else 1)
                    impls = {
                        "sm80": lambda q, k, v: flashkernel.flash_attention(q, k, v, causal=causal, backend="sm80"),
                        "sm90": lambda q, k, v: flashkernel.flash_attention(q, k, v, causal=causal, backend="sm90"),
                        "sdpa_flash": sdpa(SDPBackend.FLASH_ATTENTION, causal),
                        "sdpa_cudnn": sdpa(SDPBackend.CUDNN_ATTENTION, causal),
                    }
                    ref = impls["sdpa_flash"](q, k, v).float()
                    row = []
                    for name in names:
                        fn = impls[name]
                        err = (fn(q, k, v).float() - ref).abs().max().item()
                        ms = time_ms(lambda: fn(q, k, v), 30)
                        row.append(f"{flops / ms / 1e9:7.1f}{'!' if err > 2e-2 else ' '}")
                    cfg = f"{str(dtype)[6:]} B={b} H={h} N={n} d={d} c={int(causal)}"
                    print(f"{cfg:>28} " + " ".join(f"{x:>12}" for x in row), flush=True)
    print("('!' marks a max abs difference from sdpa_flash above 2e-2)")


if __name__ == "__main__":
    main()
