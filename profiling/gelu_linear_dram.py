"""DRAM traffic of fused gelu_linear vs unfused linear + gelu at M=8192 K=768 N=3072 (fp16, tanh).

Run under Nsight Compute, which counts bytes per kernel:

    ncu --metrics dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum \\
        --csv python profiling/gelu_linear_dram.py > gelu_linear_dram.csv

Each variant runs twice (the first call warms up); the NVTX-free kernel names tell them apart:
gelu_linear_* is the fused kernel, the GEMM + elementwise pair is the unfused path. The script
also prints the max |tanh - erf| GeLU difference on these outputs (DEVELOPMENT_LOG.md).
"""
import torch
import torch.nn.functional as F

import flashkernel

M, K, N = 8192, 768, 3072
torch.manual_seed(0)
x = torch.randn(M, K, device="cuda", dtype=torch.float16)
w = (torch.randn(N, K, device="cuda") * K ** -0.5).half()
b = torch.randn(N, device="cuda", dtype=torch.float16)
for _ in range(2):
    fused = flashkernel.gelu_linear(x, w, b, approximate="tanh")
for _ in range(2):
    unfused = F.gelu(F.linear(x, w, b), approximate="tanh")
torch.cuda.synchronize()
erf = flashkernel.gelu_linear(x, w, b, approximate="none")
pre = F.linear(x.double(), w.double(), b.double())
print(f"max |fused - unfused| = {(fused.double() - unfused.double()).abs().max().item():.3e}")
print(f"max |tanh - erf| (kernel outputs) = {(fused.double() - erf.double()).abs().max().item():.3e}")
print(f"max |tanh - erf| (fp64, same pre-activations) = "
      f"{(F.gelu(pre, approximate='tanh') - F.gelu(pre)).abs().max().item():.3e}")
print(f"intermediate [M, N] fp16 = {M * N * 2 / 1e6:.1f} MB; minimal traffic = "
      f"{2 * (M * K + N * K + N + M * N) / 1e6:.1f} MB")
