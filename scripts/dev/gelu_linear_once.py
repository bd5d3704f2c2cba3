"""Runs gelu_linear a few times on one shape (for profilers: ncu -k regex:... --launch-skip 2).
Usage: python scripts/dev/gelu_linear_once.py M K N [bf16|fp16]"""
import sys

import torch

import flashkernel

m, k, n = (int(a) for a in sys.argv[1:4])
dtype = torch.float16 if len(sys.argv) > 4 and sys.argv[4] == "fp16" else torch.bfloat16
x = torch.randn(m, k, device="cuda", dtype=dtype)
w = torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5
b = torch.randn(n, device="cuda", dtype=dtype)
for _ in range(4):
    flashkernel.gelu_linear(x, w, b, approximate="tanh")
torch.cuda.synchronize()
