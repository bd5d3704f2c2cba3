"""`flashkernel generate`: GPT-2 generation from the command line (see cli.py for the flags)."""
from __future__ import annotations

import sys
import time
from pathlib import Path


def _stage(msg: str) -> float:
    print(f"[flashkernel generate] {msg}", file=sys.stderr, flush=True)
    return time.perf_counter()


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="generate text with the GPT-2 engine")
    g.add_argument("--model", help="checkpoint directory (config.json + model.safetensors [+ tokenizer]); "
                                   "default: random GPT-2 124M (seed 0)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="prompt text (needs a tokenizer in --model)")
    src.add_argument("--tokens", help="prompt token ids, comma-separated")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--batch", type=int, default=1, help="copies of the prompt generated together")
    g.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    g.add_argument("--sample", action="store_true", help="sample (temperature / top-k / top-p) instead of greedy")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=main)


def main(args) -> int:
    import torch

    if not torch.cuda.is_available():
        print("flashkernel generate: no CUDA device visible; the engine needs a GPU.", file=sys.stderr)
        return 2
    if args.batch < 1 or args.max_new_tokens < 1:
        print("flashkernel generate: --batch and --max-new-tokens must be >= 1", file=sys.stderr)
        return 2
    from flashkernel.models import GPT2Engine

    dtype = getattr(torch, args.dtype)
    tokenizer = None
    t0 = _stage(f"loading {'random GPT-2 124M (seed 0)' if not args.model else args.model}")
    try:
        if args.model:
            engine = GPT2Engine.from_pretrained(args.model, dtype=dtype)
            if any((Path(args.model) / f).exists() for f in ("tokenizer.json", "vocab.json")):
                from transformers import AutoTokenizer
                tokenizer = AutoTokenizer.from_pretrained(args.model)
        else:
            engine = GPT2Engine.random(0, dtype=dtype)
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"flashkernel generate: {e}", file=sys.stderr)
        return 2
    _stage(f"loaded in {time.perf_counter() - t0:.2f} s ({engine.weight_bytes() / 2**20:.0f} MB of weights)")
    if args.prompt is not None:
        if tokenizer is None:
            print("flashkernel generate: --prompt needs a tokenizer in --model; pass --tokens instead",
                  file=sys.stderr)
            return 2
        ids = tokenizer(args.prompt)["input_ids"]
    elif args.tokens:
        try:
            ids = [int(t) for t in args.tokens.split(",") if t.strip()]
        except ValueError:
            print(f"flashkernel generate: --tokens must be comma-separated integers, got {args.tokens!r}",
                  file=sys.stderr)
            return 2
    else:
        ids = [50256]  # GPT-2's <|endoftext|>: unconditional generation
    kw = dict(do_sample=args.sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
              seed=args.seed)
    try:
        _stage("warm-up (captures the decode graph for this batch shape)")
        engine.generate([ids] * args.batch, min(args.max_new_tokens, 2), **kw)
        _stage(f"generating {args.max_new_tokens} tokens x batch {args.batch}")
        out = engine.generate([ids] * args.batch, args.max_new_tokens, **kw)
    except (ValueError, TypeError) as e:
        print(f"flashkernel generate: {e}", file=sys.stderr)
        return 2
    st = engine.last_stats
    for b, row in enumerate(out):
        new = row[len(ids):]
        text = tokenizer.decode(row) if tokenizer is not None else " ".join(map(str, new))
        print(f"[{b}] {text}")
    print(f"prefill {st.prefill_ms:.2f} ms, decode {st.decode_ms:.2f} ms for {st.decode_steps} steps: "
          f"{st.tokens_per_s:.1f} tokens/s ({args.batch} x {args.max_new_tokens} tokens)")
    return 0
