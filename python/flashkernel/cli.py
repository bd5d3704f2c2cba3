"""Command line: `flashkernel bench [op ...] [--quick] [--out DIR]`, `flashkernel info`,
`flashkernel generate` (GPT-2 engine) and `flashkernel --version`. From a source checkout:
`PYTHONPATH=python python -m flashkernel ...` (the library is found in build/ after scripts/test.sh)."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path


def planned_configs(module, quick: bool) -> int | None:
    """How many configurations a benchmark module will measure (its count_configs(quick)), for the
    progress display's estimate of the time left; None when the module does not say."""
    count = getattr(module, "count_configs", None)
    if count is None:
        return None
    try:
        n = int(count(quick))
    except Exception:  # noqa: BLE001 - a wrong count must not stop a benchmark; it only loses the estimate
        return None
    return n if n > 0 else None


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
        module = importlib.import_module(BENCHMARKS[name])
        total = planned_configs(module, args.quick)
        print(f"-- {name}" + (f" ({total} configurations)" if total else ""), file=sys.stderr)
        ctx.begin(name, total)
        try:
            module.run(ctx, args.quick)
        finally:
            ctx.end()
        rows = ctx.rows[start:]
        written.append((name, ctx.write_csv(name, rows), rows))
    for name, path, rows in written:
        print_table(rows, f"{name} -> {path}")
    return 0


NO_GPU_NOTE = ("no CUDA GPU is visible. What still works here: the CPU reference implementations, every op's "
               "argument checks, and the Triton twins on CPU tensors under TRITON_INTERPRET=1 (the pytest "
               "lane `TRITON_INTERPRET=1 pytest -m triton tests/python`). The CUDA ops, `flashkernel bench` and "
               "`flashkernel generate` need a GPU.")


def _info(_args) -> int:
    import torch

    import flashkernel
    from flashkernel import _library
    from flashkernel._version import version

    print(f"flashkernel {version()} (torch {torch.__version__}, library {_library.load()})")
    if not torch.cuda.is_available():  # before device_info, whose error would only name its argument
        print(f"flashkernel info: {NO_GPU_NOTE}", file=sys.stderr)
        return 2
    try:
        info = flashkernel.device_info()
    except ValueError as e:  # a device torch sees but the library cannot use: say so, no traceback
        print(f"flashkernel info: {e}", file=sys.stderr)
        return 2
    print(info)
    from flashkernel import _paths

    print(_paths.describe(info.compute_capability, _paths.built_archs(_library.load()),
                          os.environ.get("FLASHKERNEL_FORCE_ARCH") or None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from flashkernel._version import version
    from flashkernel.bench import BENCHMARKS

    parser = argparse.ArgumentParser(prog="flashkernel", description="FlashKernel: fused transformer-inference "
                                     "kernels for NVIDIA GPUs (benchmarks, device info, GPT-2 generation).")
    parser.add_argument("--version", action="version", version=f"flashkernel {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    names = ", ".join(BENCHMARKS)
    b = sub.add_parser("bench", help="run benchmarks, write bench/results/<gpu>/<op>.csv",
                       description=f"Run benchmarks on the GPU and write bench/results/<gpu>/<name>.csv. "
                                   f"Benchmarks: {names}.")
    b.add_argument("ops", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {names}")
    b.add_argument("--quick", action="store_true", help="fewer sizes and runs (smoke test)")
    b.add_argument("--out", help="results folder (default: bench/results)")
    b.set_defaults(func=_bench)
    i = sub.add_parser("info", help="print the version, the op library and the current GPU's properties")
    i.set_defaults(func=_info)
    from flashkernel.models.cli_generate import add_parser as _add_generate
    _add_generate(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
