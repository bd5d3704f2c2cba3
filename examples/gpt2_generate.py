"""Greedy (or sampled) GPT-2 generation on FlashKernel's C++ engine (flashkernel.models.GPT2Engine).

MODEL is a local Hugging Face checkpoint directory (config.json + model.safetensors, e.g. a
snapshot of "gpt2"); without one the engine holds GPT-2 124M with RANDOM weights, good for timing
only. A tokenizer in MODEL (transformers installed) decodes the output. --stream prints the
tokens as they are produced (GPT2Engine.generate_stream), one sequence.
"""
import argparse
from pathlib import Path

import torch

from _common import require_gpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="checkpoint directory (default: random weights)")
    parser.add_argument("--tokens", default="464,3290,318", help="prompt token ids, comma-separated "
                        "(default: %(default)s, GPT-2's 'The dog is')")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1, help="copies of the prompt generated together")
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    parser.add_argument("--sample", action="store_true", help="sample (top-k 50, seed 0) instead of greedy")
    parser.add_argument("--stream", action="store_true", help="print the tokens as they are produced (needs --batch 1)")
    args = parser.parse_args()
    if args.stream and args.batch != 1:
        parser.error(f"--stream prints one sequence and needs --batch 1, got --batch {args.batch}")
    if args.model and not (Path(args.model) / "config.json").is_file():
        parser.error(f"{args.model} holds no config.json (a Hugging Face GPT-2 checkpoint directory is expected)")
    try:
        ids = [int(t) for t in args.tokens.split(",")]
    except ValueError:
        parser.error(f"--tokens must be comma-separated integers, got {args.tokens!r}")
    fk = require_gpu(parser.prog)

    dtype = getattr(torch, args.dtype)
    if args.model:
        engine = fk.models.GPT2Engine.from_pretrained(args.model, dtype=dtype)
        print(f"weights: {args.model}")
    else:
        engine = fk.models.GPT2Engine.random(seed=0, dtype=dtype)
        print("weights: none given, so GPT-2 124M with RANDOM weights (seed 0): the tokens are meaningless")
    prompt = torch.tensor([ids] * args.batch)
    kw = dict(do_sample=args.sample, top_k=50, seed=0) if args.sample else {}
    engine.generate(prompt, max_new_tokens=2, **kw)  # warm-up: captures the decode graph for this batch

    tokenizer = None
    if args.model and any((Path(args.model) / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        try:
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(args.model)
        except ImportError:
            pass
    if args.stream:
        # Each step's token reaches the host as soon as it is chosen (a sync per step, so slower).
        print(tokenizer.decode(ids) if tokenizer else ids, end="", flush=True)
        steps = engine.generate_stream(prompt, max_new_tokens=args.max_new_tokens, **kw)
        for piece in fk.models.stream_text(steps, ids, tokenizer):
            print(piece, end="", flush=True)
        print()
        return
    out = engine.generate(prompt, max_new_tokens=args.max_new_tokens, **kw)
    for row in out.tolist():
        print(repr(tokenizer.decode(row)) if tokenizer else row)
    st = engine.last_stats
    print(f"prefill {st.prefill_ms:.2f} ms, decode {st.decode_ms:.2f} ms ({st.decode_steps} steps): "
          f"{st.tokens_per_s:.1f} tokens/s for {args.batch} x {args.max_new_tokens} new tokens")


if __name__ == "__main__":
    main()
