"""flashkernel.rope / rope_fused (rotary embedding of q and k in one launch) next to eager PyTorch.

rope reads cos/sin tables (flashkernel.rope_cache); rope_fused computes the angles in the kernel.
The PyTorch version rotates q and k in fp32 with the same tables (HF's rotate_half for "neox").
"""
import argparse

import torch

from _common import add_common_args, compare, require_gpu


def rotate(x, cos, sin, style):
    """x [B, H, N, d] rotated over all of d with cos/sin [N, d/2], math in fp32."""
    xf = x.float()
    if style == "neox":  # pairs (x[i], x[i + d/2])
        a, b = xf.chunk(2, dim=-1)
        out = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    else:  # "gptj": pairs (x[2i], x[2i + 1])
        a, b = xf[..., 0::2], xf[..., 1::2]
        out = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    return out.to(x.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=32, help="q heads (default: %(default)s)")
    parser.add_argument("--kv-heads", type=int, default=8, help="k heads (default: %(default)s)")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--style", choices=("neox", "gptj"), default="neox")
    add_common_args(parser, dtypes=("float16", "bfloat16", "float32"))
    args = parser.parse_args()
    fk = require_gpu(parser.prog)

    dtype = getattr(torch, args.dtype)
    q = torch.randn(args.batch, args.heads, args.seq, args.head_dim, device="cuda", dtype=dtype)
    k = torch.randn(args.batch, args.kv_heads, args.seq, args.head_dim, device="cuda", dtype=dtype)
    cos, sin = fk.rope_cache(args.seq, args.head_dim, device="cuda")  # fp32 [N, d/2], positions 0..N-1

    def torch_rope():
        return rotate(q, cos, sin, args.style), rotate(k, cos, sin, args.style)

    print(f"rope B={args.batch} N={args.seq} Hq={args.heads} Hk={args.kv_heads} d={args.head_dim} "
          f"{args.style} {args.dtype}")
    print("-- flashkernel.rope (cos/sin tables)")
    compare(lambda: fk.rope(q, k, cos, sin, style=args.style), torch_rope, args.iters)
    print("-- flashkernel.rope_fused (angles computed in the kernel)")
    compare(lambda: fk.rope_fused(q, k, style=args.style), torch_rope, args.iters)


if __name__ == "__main__":
    main()
