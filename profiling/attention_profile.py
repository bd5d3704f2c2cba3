"""One flash_attention forward per implementation (CUDA sm80 kernel, Triton twin) at B=4, H=16,
N=4096, d=128, bf16, non-causal, inside a cudaProfilerStart/Stop range so Nsight Compute sees only
these launches (Triton's autotuning runs before the range):

    ncu --profile-from-start off --set full -o profiling/attention_d128_n4096 \\
        python3 profiling/attention_profile.py
"""
import torch

import flashkernel
import flashkernel.triton

q, k, v = (torch.randn(4, 16, 4096, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
for _ in range(3):  # compile, autotune, warm up
    flashkernel.flash_attention(q, k, v)
    flashkernel.triton.flash_attention(q, k, v)
torch.cuda.synchronize()
torch.cuda.profiler.start()
flashkernel.flash_attention(q, k, v)
flashkernel.triton.flash_attention(q, k, v)
torch.cuda.synchronize()
torch.cuda.profiler.stop()
