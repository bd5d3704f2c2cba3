"""Host (CPU) time per call of each attention path on a small shape, where the GPU finishes
before the next launch is issued: what a benchmark of a small problem really measures then.
Prints microseconds per call and, for the Triton twin, a cProfile of the slowest functions.
Usage: python scripts/dev/attention_host_overhead.py [B H N d]"""
import cProfile
import pstats
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import flashkernel
import flashkernel.triton


def host_us(fn, calls=200):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    return (t1 - t0) / calls * 1e6, (t2 - t0) / calls * 1e6


def main():
    b, h, n, d = (int(a) for a in sys.argv[1:5]) if len(sys.argv) > 4 else (1, 8, 2048, 64)
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))

    def flash():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)

    impls = {
        "flashkernel_cuda": lambda: flashkernel.flash_attention(q, k, v),
        "flashkernel_triton": lambda: flashkernel.triton.flash_attention(q, k, v),
        "sdpa_flash": flash,
    }
    print(torch.cuda.get_device_name(), f"B={b} H={h} N={n} d={d} bf16")
    for name, fn in impls.items():
        issue, total = host_us(fn)
        print(f"{name:>20}: {issue:8.1f} us/call issued, {total:8.1f} us/call with the GPU")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(200):
        impls["flashkernel_triton"]()
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
