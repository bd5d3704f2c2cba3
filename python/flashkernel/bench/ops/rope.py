"""RoPE on q and k against the ceiling (a device copy of the same q+k bytes), the HuggingFace
formula in eager mode and under torch.compile, and Liger-Kernel's liger_rotary_pos_emb (when the
package is importable). GB/s counts q and k read once and written once."""
from __future__ import annotations

import torch

import flashkernel
import flashkernel.triton


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def hf_rope(q, k, cos_table, sin_table):
    """What a HuggingFace Llama layer does: cos/sin rows for positions 0..N-1 in the [.., r]
    layout, then q * cos + rotate_half(q) * sin (and the same for k), in the input dtype."""
    n = q.shape[2]
    cos = torch.cat((cos_table[:n], cos_table[:n]), -1)[None, None].to(q.dtype)
    sin = torch.cat((sin_table[:n], sin_table[:n]), -1)[None, None].to(q.dtype)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _liger_rope():
    """Liger-Kernel's RoPE (it takes HF's [1, N, d] duplicated-half cos/sin), or None."""
    try:
        from liger_kernel.transformers.rope import liger_rotary_pos_emb
    except ImportError:
        return None
    return liger_rotary_pos_emb


def configs(quick: bool):
    seqs = [512, 1024, 2048, 4096] if not quick else [1024, 4096]
    for batch in (1, 8):
        for seq in seqs:
            for d in (64, 128):
                yield batch, 32, 32, seq, d
            yield batch, 32, 8, seq, 128  # GQA


DTYPES = (torch.float16, torch.bfloat16)


def count_configs(quick: bool) -> int:
    """Configurations (dtype, B, N, heads, d) run(ctx, quick) measures, for the progress display."""
    return len(DTYPES) * len(list(configs(quick)))


def run(ctx, quick: bool) -> None:
    compiled = torch.compile(hf_rope, dynamic=True)
    liger = _liger_rope()
    for dtype in DTYPES:
        elem = torch.tensor([], dtype=dtype).element_size()
        for batch, hq, hk, seq, d in configs(quick):
            config = f"B={batch} N={seq} Hq={hq} Hk={hk} d={d}"
            qk_elems = batch * seq * (hq + hk) * d
            moved = 2 * qk_elems * elem  # q and k read once and written once
            cos, sin = flashkernel.rope_cache(seq, d)
            sets = ctx.rotating(lambda: (torch.randn(batch, hq, seq, d, device="cuda", dtype=dtype),
                                         torch.randn(batch, hk, seq, d, device="cuda", dtype=dtype)), moved)
            impls = {
                "flashkernel_cuda": lambda q, k: flashkernel.rope(q, k, cos, sin),
                "flashkernel_cuda_fused": lambda q, k: flashkernel.rope_fused(q, k),
                "flashkernel_triton": lambda q, k: flashkernel.triton.rope(q, k, cos, sin),
                "torch_eager": lambda q, k: hf_rope(q, k, cos, sin),
                "torch_compile": lambda q, k: compiled(q, k, cos, sin),
            }
            if liger is not None:
                # The tables in the layout a HuggingFace model hands Liger, built once (not timed).
                cos_hf = torch.cat((cos, cos), -1)[None].to(dtype)
                sin_hf = torch.cat((sin, sin), -1)[None].to(dtype)
                impls["liger"] = lambda q, k: liger(q, k, cos_hf, sin_hf)
            for impl, fn in impls.items():
                ctx.record("rope", impl, dtype, config, ctx.time(fn, sets), bytes_moved=moved)
            del sets
            copy_sets = ctx.rotating(lambda: (torch.empty(qk_elems, dtype=dtype, device="cuda"),
                                              torch.randn(qk_elems, device="cuda", dtype=dtype)), moved)
            ctx.record("rope", "device_copy", dtype, config,
                       ctx.time(lambda dst, src: dst.copy_(src), copy_sets), bytes_moved=moved)
            del copy_sets
