"""add_layernorm (residual + bias + LayerNorm, writing both the sum and the normalized rows) vs
torch eager (add, add, layer_norm: three kernels) and torch.compile of the same expression.
Bytes moved: read x, residual, write sum and out (+ the [C] vectors)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from flashkernel.ops.layernorm import add_layernorm

OP = "layernorm"


def _torch(x, r, b, w, lb):
    s = x + r + b
    return F.layer_norm(s, (s.shape[-1],), w, lb, 1e-5), s


def run(ctx, quick: bool) -> None:
    compiled = torch.compile(_torch)
    shapes = [(1, 768), (8, 768), (4096, 768), (16384, 1024)]
    if quick:
        shapes = shapes[:3]
    for dtype in (torch.float16, torch.bfloat16):
        for rows, cols in shapes:
            elem = torch.finfo(dtype).bits // 8
            nbytes = 4 * rows * cols * elem + 4 * cols * elem

            def make():
                return (torch.randn(rows, cols, device="cuda", dtype=dtype),
                        torch.randn(rows, cols, device="cuda", dtype=dtype),
                        torch.randn(cols, device="cuda", dtype=dtype),
                        torch.randn(cols, device="cuda", dtype=dtype),
                        torch.randn(cols, device="cuda", dtype=dtype))

            sets = ctx.rotating(make, nbytes)
            cfg = f"rows={rows} cols={cols}"
            for impl, fn in (("flashkernel", lambda x, r, b, w, lb: add_layernorm(x, r, bias=b, weight=w, ln_bias=lb)),
                             ("torch_eager", _torch), ("torch_compile", compiled)):
                ctx.record(OP, impl, dtype, cfg, ctx.time(fn, sets), bytes_moved=nbytes)
