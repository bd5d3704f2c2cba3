"""flashkernel.add_layernorm (residual add + LayerNorm in one kernel) next to eager PyTorch.

Both return (LayerNorm(x + residual), x + residual): the new hidden state and the new residual
stream of a pre-LN transformer block.
"""
import argparse

import torch
import torch.nn.functional as F

from _common import add_common_args, compare, require_gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096, help="tokens (default: %(default)s)")
    parser.add_argument("--cols", type=int, default=768, help="hidden size, at most 8192 (default: %(default)s)")
    parser.add_argument("--eps", type=float, default=1e-5)
    add_common_args(parser, dtypes=("float16", "bfloat16", "float32"))
    args = parser.parse_args()
    fk = require_gpu(parser.prog)

    dtype = getattr(torch, args.dtype)
    x, residual = (torch.randn(args.rows, args.cols, device="cuda", dtype=dtype) for _ in range(2))
    weight = torch.randn(args.cols, device="cuda", dtype=dtype)
    bias = torch.randn(args.cols, device="cuda", dtype=dtype)

    def torch_add_layernorm():
        s = x + residual
        return F.layer_norm(s, (args.cols,), weight, bias, args.eps), s

    print(f"add_layernorm rows={args.rows} cols={args.cols} {args.dtype}")
    compare(lambda: fk.add_layernorm(x, residual, weight=weight, ln_bias=bias, eps=args.eps),
            torch_add_layernorm, args.iters)


if __name__ == "__main__":
    main()
