"""flashkernel.flash_attention next to torch's F.scaled_dot_product_attention (SDPA).

q [B, H, N, d], k/v [B, H_kv, N, d] (GQA when H_kv < H). backend "auto" runs the Hopper kernel
(TMA + wgmma) on compute capability 9.x for head_dim 64/128 and the portable mma.sync kernel
elsewhere, and for the other head dims and a sliding window (--window LEFT RIGHT; SDPA then gets
the same mask as a boolean attn_mask).
"""
import argparse

import torch
import torch.nn.functional as F

from _common import add_common_args, compare, require_gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=16, help="query heads (default: %(default)s)")
    parser.add_argument("--kv-heads", type=int, default=None, help="K/V heads, dividing --heads (default: --heads)")
    parser.add_argument("--seq", type=int, default=4096, help="sequence length N (default: %(default)s)")
    parser.add_argument("--head-dim", type=int, choices=(32, 64, 80, 96, 128, 256), default=128)
    parser.add_argument("--window", type=int, nargs=2, metavar=("LEFT", "RIGHT"), default=None,
                        help="sliding window: query i sees keys i-LEFT..i+RIGHT (negative: unbounded)")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--backend", choices=("auto", "sm80", "sm90"), default="auto")
    add_common_args(parser)
    args = parser.parse_args()
    fk = require_gpu(parser.prog)

    dtype, kv_heads = getattr(torch, args.dtype), args.kv_heads or args.heads
    q = torch.randn(args.batch, args.heads, args.seq, args.head_dim, device="cuda", dtype=dtype)
    k = torch.randn(args.batch, kv_heads, args.seq, args.head_dim, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    print(f"attention B={args.batch} H={args.heads} H_kv={kv_heads} N={args.seq} d={args.head_dim} "
          f"causal={args.causal} {args.dtype} backend={args.backend}")
    window = tuple(args.window) if args.window else None
    mask = None
    if window is not None:  # SDPA's form of the same visibility: a boolean [N, N] mask
        i, j = torch.arange(args.seq, device="cuda")[:, None], torch.arange(args.seq, device="cuda")[None, :]
        left, right = window[0], 0 if args.causal else window[1]
        mask = torch.ones(args.seq, args.seq, dtype=torch.bool, device="cuda")
        if right >= 0:
            mask &= j <= i + right
        if left >= 0:
            mask &= j >= i - left
    compare(lambda: fk.flash_attention(q, k, v, causal=args.causal, window=window, backend=args.backend),
            lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=args.causal and mask is None,
                                                   enable_gqa=kv_heads != args.heads),
            args.iters, torch_name="SDPA")


if __name__ == "__main__":
    main()
