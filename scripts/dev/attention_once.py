"""Runs flash_attention a few times on one shape (for profilers: ncu -k regex:attention --launch-skip 2).
Usage: python scripts/dev/attention_once.py B H N d causal(0|1) [bf16|fp16] [sm80|sm90|auto|sdpa_flash]"""
import sys

import torch

import flashkernel

b, h, n, d, causal = (int(a) for a in sys.argv[1:6])
dtype = torch.float16 if len(sys.argv) > 6 and sys.argv[6] == "fp16" else torch.bfloat16
backend = sys.argv[7] if len(sys.argv) > 7 else "auto"
q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype) for _ in range(3))
for _ in range(4):
    if backend == "sdpa_flash":  # PyTorch's FlashAttention-2, for side-by-side profiles
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=bool(causal))
    else:
        flashkernel.flash_attention(q, k, v, causal=bool(causal), backend=backend)
torch.cuda.synchronize()
