"""vector_add against the ceiling: torch's device copy of the same bytes (read+write counted)."""
from __future__ import annotations

import torch

import flashkernel
import flashkernel.triton


DTYPES = (torch.float32, torch.float16)


def sizes_mb(quick: bool) -> list[int]:
    return [1, 16, 64, 256, 1024] if not quick else [16, 256]


def count_configs(quick: bool) -> int:
    """Configurations (dtype, size) run(ctx, quick) measures, for the progress display."""
    return len(DTYPES) * len(sizes_mb(quick))


def run(ctx, quick: bool) -> None:
    for dtype in DTYPES:
        elem = torch.tensor([], dtype=dtype).element_size()
        for mb in sizes_mb(quick):
            n = mb * (1 << 20) // elem
            config = f"n={n} MB={mb}"
            # vector_add reads a and b and writes out: 3 arrays of n elements.
            add_bytes = 3 * n * elem
            sets = ctx.rotating(lambda: (torch.randn(n, device="cuda").to(dtype),
                                         torch.randn(n, device="cuda").to(dtype)), 3 * n * elem)
            ctx.record("vector_add", "flashkernel_cuda", dtype, config,
                       ctx.time(flashkernel.vector_add, sets), bytes_moved=add_bytes)
            ctx.record("vector_add", "flashkernel_triton", dtype, config,
                       ctx.time(flashkernel.triton.vector_add, sets), bytes_moved=add_bytes)
            ctx.record("vector_add", "torch_eager", dtype, config,
                       ctx.time(torch.add, sets), bytes_moved=add_bytes)
            # The ceiling: a device-to-device copy of the same total bytes (read+write), i.e. a
            # copy of 1.5 n elements, so bytes moved match vector_add's exactly.
            m = 3 * n // 2
            copy_sets = ctx.rotating(lambda: (torch.empty(m, dtype=dtype, device="cuda"),
                                              torch.randn(m, device="cuda").to(dtype)), 2 * m * elem)
            ctx.record("vector_add", "device_copy", dtype, config,
                       ctx.time(lambda dst, src: dst.copy_(src), copy_sets), bytes_moved=2 * m * elem)
            del sets, copy_sets
