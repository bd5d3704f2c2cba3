"""flashkernel.vector_add (a + b elementwise, the skeleton op) next to torch.add.

The inputs are contiguous CUDA tensors of one shape and dtype; the result has that shape and dtype.
16-bit inputs are added in fp32 and rounded once to their dtype, as torch does: the difference
printed should be 0.
"""
import argparse

import torch

from _common import add_common_args, compare, require_gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numel", type=int, default=64 * 1024 * 1024,
                        help="elements of each input (default: %(default)s, 256 MB in float32)")
    add_common_args(parser, dtypes=("float32", "float16", "bfloat16"))
    args = parser.parse_args()
    fk = require_gpu(parser.prog)

    dtype = getattr(torch, args.dtype)
    a, b = (torch.randn(args.numel, device="cuda", dtype=dtype) for _ in range(2))

    print(f"-- vector_add of {args.numel} elements ({args.dtype})")
    compare(lambda: fk.vector_add(a, b), lambda: torch.add(a, b), args.iters)


if __name__ == "__main__":
    main()
