"""flashkernel.add_layernorm (residual add + LayerNorm in one kernel) next to eager PyTorch; with
--rms, flashkernel.add_rms_norm (residual add + RMSNorm, as in Llama-family models) instead.

Both return (norm(x + residual), x + residual): the new hidden state and the new residual stream
of a pre-norm transformer block.
"""
import argparse

import torch
import torch.nn.functional as F

from _common import add_common_args, compare, require_gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096, help="tokens (default: %(default)s)")
    parser.add_argument("--cols", type=int, default=768, help="hidden size, at most 8192 (default: %(default)s)")
    parser.add_argument("--rms", action="store_true", help="RMSNorm (add_rms_norm) instead of LayerNorm")
    parser.add_argument("--eps", type=float, default=None,
                        help="default: 1e-5 for LayerNorm, 1e-6 for RMSNorm (the ops' defaults)")
    add_common_args(parser, dtypes=("float16", "bfloat16", "float32"))
    args = parser.parse_args()
    fk = require_gpu(parser.prog)

    eps = args.eps if args.eps is not None else (1e-6 if args.rms else 1e-5)
    dtype = getattr(torch, args.dtype)
    x, residual = (torch.randn(args.rows, args.cols, device="cuda", dtype=dtype) for _ in range(2))
    weight = torch.randn(args.cols, device="cuda", dtype=dtype)
    bias = torch.randn(args.cols, device="cuda", dtype=dtype)

    def torch_add_layernorm():
        s = x + residual
        return F.layer_norm(s, (args.cols,), weight, bias, eps), s

    def torch_add_rms_norm():
        s = x + residual
        return F.rms_norm(s, (args.cols,), weight, eps), s

    op = "add_rms_norm" if args.rms else "add_layernorm"
    print(f"{op} rows={args.rows} cols={args.cols} {args.dtype}")
    if args.rms:
        compare(lambda: fk.add_rms_norm(x, residual, weight=weight, eps=eps), torch_add_rms_norm, args.iters)
    else:
        compare(lambda: fk.add_layernorm(x, residual, weight=weight, ln_bias=bias, eps=eps),
                torch_add_layernorm, args.iters)


if __name__ == "__main__":
    main()
