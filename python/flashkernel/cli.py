"""Command line: `flashkernel bench [op ...] [--quick] [--out DIR]`, `flashkernel info` and
`flashkernel generate` (GPT-2 engine)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path


def _bench(args) -> int:
    import torch

    from flashkernel.bench import BENCHMARKS
    from flashkernel.bench.harness import REPO_ROOT, BenchContext, CommitUnknownError, git_commit, print_table

    names = args.ops or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"flashkernel bench: unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    try:  # before any GPU work: a results file must name the commit that produced it
        git_commit()
    except CommitUnknownError as e:
        print(f"flashkernel bench: {e}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("flashkernel bench: no CUDA device visible; benchmarks need a GPU.", file=sys.stderr)
        return 2
    from flashkernel.triton import _autotune

    if not _autotune.autotune_enabled():  # the published numbers are the autotuned twins'
        print(f"flashkernel bench: ignoring {_autotune.ENV}=0, benchmarks autotune the Triton twins", file=sys.stderr)
        os.environ[_autotune.ENV] = "1"
    ctx = BenchContext(out_dir=Path(args.out) if args.out else REPO_ROOT / "bench" / "results", quick=args.quick)
    print(f"flashkernel bench on {ctx.gpu} (torch {ctx.torch_version}, commit {ctx.commit})", file=sys.stderr)
    written = []
    for name in names:
        start = len(ctx.rows)
        print(f"-- {name}", file=sys.stderr)
        importlib.import_module(BENCHMARKS[name]).run(ctx, args.quick)
        rows = ctx.rows[start:]
        written.append((name, ctx.write_csv(name, rows), rows))
    for name, path, rows in written:
        print_table(rows, f"{name} -> {path}")
    return 0


def _info(_args) -> int:
    import flashkernel

    try:
        print(flashkernel.device_info())
    except ValueError as e:  # no GPU: say so, no traceback
        print(f"flashkernel info: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="flashkernel")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="run benchmarks, write bench/results/<gpu>/<op>.csv")
    b.add_argument("ops", nargs="*", help="benchmarks to run (default: all)")
    b.add_argument("--quick", action="store_true", help="fewer sizes and runs (smoke test)")
    b.add_argument("--out", help="results folder (default: bench/results)")
    b.set_defaults(func=_bench)
    i = sub.add_parser("info", help="print the current GPU's properties")
    i.set_defaults(func=_info)
    from flashkernel.models.cli_generate import add_parser as _add_generate
    _add_generate(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
