"""flashkernel.gelu_linear (GeLU(x @ W^T + b) in one kernel) next to F.gelu(F.linear(...)).

W has nn.Linear's layout [N, K]; K and N must be multiples of 8. M <= 64 runs the weight-streaming
decode kernel; larger M the Hopper TMA + wgmma kernel on compute capability 9.x (when it has enough
tiles) and the mma.sync kernels elsewhere.
"""
import argparse

import torch
import torch.nn.functional as F

from _common import add_common_args, compare, require_gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=2048, help="rows of x (tokens) (default: %(default)s)")
    parser.add_argument("--k", type=int, default=768, help="in_features (default: %(default)s)")
    parser.add_argument("--n", type=int, default=3072, help="out_features (default: %(default)s)")
    parser.add_argument("--approximate", choices=("none", "tanh"), default="tanh",
                        help='GeLU form: "none" (erf) or "tanh" (GPT-2) (default: %(default)s)')
    add_common_args(parser)
    args = parser.parse_args()
    fk = require_gpu(parser.prog)

    dtype = getattr(torch, args.dtype)
    x = torch.randn(args.m, args.k, device="cuda", dtype=dtype)
    weight = torch.randn(args.n, args.k, device="cuda", dtype=dtype) / args.k ** 0.5
    bias = torch.randn(args.n, device="cuda", dtype=dtype)

    print(f"gelu_linear M={args.m} K={args.k} N={args.n} approximate={args.approximate} {args.dtype}")
    compare(lambda: fk.gelu_linear(x, weight, bias, approximate=args.approximate),
            lambda: F.gelu(F.linear(x, weight, bias), approximate=args.approximate), args.iters)


if __name__ == "__main__":
    main()
