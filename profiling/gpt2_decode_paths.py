"""Decode time per step of the GPT-2 engine's decode paths, alternated in one process.

One engine per path (FLASHKERNEL_GPT2_DECODE = graph | auto | pdl | fused | persistent, read at
construction; auto is the default's per-batch choice) on
the same random-weight GPT-2 124M; the paths are timed in turn, round after round (so drift of
clocks or temperature hits all of them alike), each round one greedy generate per path. Reported:
the median over rounds of GenerationStats.decode_ms / decode_steps, per batch, and each path's
ratio to the graph path. Each path's tokens are compared with the graph path's (pdl must equal
them: same kernels; fused and persistent may differ after a near-tie: their sums run in another order).

    PYTHONPATH=python FLASHKERNEL_LIB_DIR=build/python/flashkernel \\
        python profiling/gpt2_decode_paths.py [--batch 1 8] [--prompt 32] [--gen 64] [--rounds 7]
"""
from __future__ import annotations

import argparse
import os
import statistics

PATHS = ("graph", "auto", "pdl", "fused", "persistent")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    import torch
    import transformers

    from flashkernel.models import GPT2Engine

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval().to("cuda", torch.float16)
    engines = {}
    for path in PATHS:
        os.environ["FLASHKERNEL_GPT2_DECODE"] = path
        engines[path] = GPT2Engine.from_hf(hf)
    os.environ.pop("FLASHKERNEL_GPT2_DECODE")
    print(f"GPT-2 124M fp16, prompt {args.prompt}, gen {args.gen}, {args.rounds} rounds, "
          f"on {torch.cuda.get_device_name()}")
    print("batch  path        decode us/step (median)  min     vs graph  tokens")
    for batch in args.batch:
        rows = [[(7 * i + 3 * b) % 50000 + 1 for i in range(args.prompt)] for b in range(batch)]
        reference = None
        per_step = {p: [] for p in PATHS}
        same = {}
        for p in PATHS:  # capture + warm-up, and the tokens
            out = engines[p].generate(rows, args.gen)
            reference = reference if reference is not None else out
            same[p] = out == reference
        for _ in range(args.rounds):
            for p in PATHS:
                engines[p].generate(rows, args.gen)
                st = engines[p].last_stats
                per_step[p].append(st.decode_ms * 1e3 / st.decode_steps)
        base = statistics.median(per_step["graph"])
        for p in PATHS:
            med = statistics.median(per_step[p])
            print(f"{batch:<6} {p:<11} {med:10.1f}               {min(per_step[p]):7.1f}  {base / med:6.2f}x   "
                  f"{'equal' if same[p] else 'DIFFER'}")


if __name__ == "__main__":
    main()
