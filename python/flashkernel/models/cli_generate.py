"""`flashkernel generate`: GPT-2 generation from the command line (`flashkernel generate --help`)."""
from __future__ import annotations

import sys
import time
from pathlib import Path


def _stage(msg: str) -> float:
    print(f"[flashkernel generate] {msg}", file=sys.stderr, flush=True)
    return time.perf_counter()


RANDOM_WEIGHTS_NOTE = ("no --model given: running GPT-2 124M on RANDOM weights (seed 0); the tokens are "
                       "meaningless, useful for timing only. Pass --model DIR (config.json + model.safetensors) "
                       "for a real checkpoint.")


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="generate text with the GPT-2 engine",
                       description="Generate with FlashKernel's GPT-2 decode engine (CUDA graphs, paged KV "
                                   "cache). Needs a GPU; without --model it runs random weights.")
    g.add_argument("--model", metavar="DIR",
                   help="checkpoint directory (config.json + model.safetensors [+ tokenizer]); "
                        "default: GPT-2 124M with random weights (seed 0), for timing only")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="prompt text (needs a tokenizer in --model)")
    src.add_argument("--tokens", metavar="IDS",
                     help="prompt token ids, comma-separated (default: 50256, <|endoftext|>)")
    g.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                   help="tokens to generate per sequence (default: %(default)s)")
    g.add_argument("--batch", type=int, default=1, metavar="B",
                   help="copies of the prompt generated together (default: %(default)s)")
    g.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16",
                   help="weight and activation dtype (default: %(default)s)")
    g.add_argument("--sample", action="store_true",
                   help="sample (temperature, then top-k, then top-p) instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="with --sample: logits are divided by T > 0 (default: %(default)s)")
    g.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="with --sample: keep the K most likely tokens (default: all)")
    g.add_argument("--top-p", type=float, default=None, metavar="P",
                   help="with --sample: keep the smallest set of tokens whose probability reaches P, "
                        "0 < P <= 1 (default: 1, all)")
    g.add_argument("--seed", type=int, default=0,
                   help="with --sample: random seed; the same seed gives the same tokens (default: %(default)s)")
    g.add_argument("--stream", action="store_true",
                   help="print the tokens as they are produced (one sequence: --batch 1); slower, as each "
                        "step waits for its token to reach the host")
    g.set_defaults(func=main)


def _error(msg: str) -> int:
    print(f"flashkernel generate: {msg}", file=sys.stderr)
    return 2


def _check_args(args) -> str | None:
    """The argument errors found without a GPU (None: none); the engine checks the rest."""
    if args.batch < 1 or args.max_new_tokens < 1:
        return "--batch and --max-new-tokens must be >= 1"
    if args.stream and args.batch != 1:
        return f"--stream prints one sequence as it is generated and needs --batch 1, got --batch {args.batch}"
    if args.sample:
        if not args.temperature > 0:
            return f"--temperature must be > 0, got {args.temperature}"
        if args.top_k is not None and args.top_k < 0:
            return f"--top-k must be >= 0, got {args.top_k}"
        if args.top_p is not None and not 0 < args.top_p <= 1:
            return f"--top-p must be in (0, 1], got {args.top_p}"
    if args.tokens is not None:
        try:
            ids = [int(t) for t in args.tokens.split(",") if t.strip()]
        except ValueError:
            return f"--tokens must be comma-separated integers, got {args.tokens!r}"
        if not ids:
            return "--tokens holds no token id"
    if args.model and not Path(args.model).is_dir():
        return f"--model {args.model!r} is not a directory"
    if args.prompt is not None and not (args.model and any((Path(args.model) / f).exists()
                                                           for f in ("tokenizer.json", "vocab.json"))):
        return "--prompt needs a tokenizer in --model; pass --tokens instead"
    return None


def _stream(engine, ids: list[int], max_new_tokens: int, tokenizer, kw: dict) -> int:
    """--stream: the text (or token ids) of the one sequence, printed as each token arrives."""
    from flashkernel.models import stream_text

    print("[0]" + (" " + tokenizer.decode(ids) if tokenizer is not None else ""), end="", flush=True)
    t0 = time.perf_counter()
    for piece in stream_text(engine.generate_stream([ids], max_new_tokens, **kw), ids, tokenizer):
        print(piece, end="", flush=True)
    seconds = time.perf_counter() - t0
    print()
    print(f"streamed {max_new_tokens} tokens in {seconds * 1e3:.2f} ms: {max_new_tokens / max(seconds, 1e-9):.1f} tokens/s "
          "(wall clock, one host sync per token)")
    return 0


def main(args) -> int:
    import torch

    problem = _check_args(args)  # before the GPU check: a wrong command line is reported anywhere
    if problem:
        return _error(problem)
    if not torch.cuda.is_available():
        print("flashkernel generate: no CUDA device visible; the engine needs a GPU.", file=sys.stderr)
        return 2
    from flashkernel.models import GPT2Engine

    dtype = getattr(torch, args.dtype)
    tokenizer = None
    if not args.model:
        _stage(f"note: {RANDOM_WEIGHTS_NOTE}")
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
        ids = tokenizer(args.prompt)["input_ids"]
    elif args.tokens:
        ids = [int(t) for t in args.tokens.split(",") if t.strip()]  # checked in _check_args
    else:
        ids = [50256]  # GPT-2's <|endoftext|>: unconditional generation
    kw = dict(do_sample=args.sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
              seed=args.seed)
    try:
        _stage("warm-up (captures the decode graph for this batch shape)")
        engine.generate([ids] * args.batch, min(args.max_new_tokens, 2), **kw)
        _stage(f"generating {args.max_new_tokens} tokens x batch {args.batch}")
        if args.stream:
            return _stream(engine, ids, args.max_new_tokens, tokenizer, kw)
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
