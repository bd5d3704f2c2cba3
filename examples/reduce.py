"""flashkernel.reduce_sum / reduce_max next to torch.sum / torch.amax.

Two cases: the whole tensor to one value (deterministic two-pass reduction), and row-wise over the
last dimension. Both accumulate in fp32 and return the input dtype, like torch.
"""
import argparse

import torch

from _common import add_common_args, compare, require_gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", choices=("sum", "max"), default="sum")
    parser.add_argument("--numel", type=int, default=100_000_000, help="elements of the full reduction "
                        "(default: %(default)s)")
    parser.add_argument("--rows", type=int, default=512, help="rows of the row-wise reduction (default: %(default)s)")
    parser.add_argument("--cols", type=int, default=2048, help="its row length (default: %(default)s)")
    add_common_args(parser, dtypes=("float32", "float16", "bfloat16"))
    args = parser.parse_args()
    fk = require_gpu(parser.prog)

    dtype = getattr(torch, args.dtype)
    fk_op = fk.reduce_sum if args.op == "sum" else fk.reduce_max
    torch_op = torch.sum if args.op == "sum" else torch.amax
    x = torch.randn(args.numel, device="cuda", dtype=dtype)
    rows = torch.randn(args.rows, args.cols, device="cuda", dtype=dtype)

    print(f"-- reduce_{args.op} over all {args.numel} elements ({args.dtype})")
    compare(lambda: fk_op(x), lambda: torch_op(x), args.iters)
    print(f"-- reduce_{args.op} over the last dim of [{args.rows}, {args.cols}] ({args.dtype})")
    compare(lambda: fk_op(rows, dim=-1), lambda: torch_op(rows, dim=-1), args.iters)


if __name__ == "__main__":
    main()
