"""Hugging Face GPT-2 with its own `generate`, before and after flashkernel.integrations.patch_gpt2.

patch_gpt2 swaps every block's attention for flashkernel.flash_attention (over HF's KV cache) and
its MLP c_fc + GeLU for the fused flashkernel.gelu_linear, in place; unpatch_gpt2 undoes it.
MODEL is a local Hugging Face checkpoint directory; without one a GPT-2 124M with RANDOM weights
is used. Needs transformers.
"""
import argparse
import sys

import torch

from _common import add_common_args, require_gpu, time_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="checkpoint directory (default: random weights)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=32, help="random prompt tokens (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    add_common_args(parser)
    parser.set_defaults(iters=3)
    args = parser.parse_args()
    require_gpu(parser.prog)  # also makes flashkernel importable from a checkout
    try:
        import transformers
    except ImportError:
        sys.exit(f"{parser.prog}: this example needs transformers (pip install transformers)")
    from flashkernel.integrations import patch_gpt2, unpatch_gpt2

    dtype = getattr(torch, args.dtype)
    if args.model:
        model = transformers.GPT2LMHeadModel.from_pretrained(args.model)
        print(f"weights: {args.model}")
    else:
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config())
        print("weights: none given, so GPT-2 124M with RANDOM weights: the tokens are meaningless")
    model = model.to("cuda", dtype).eval()
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.prompt_len), device="cuda")
    n = args.max_new_tokens
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
              pad_token_id=model.config.eos_token_id)

    @torch.no_grad()
    def run():
        """Logits of the prompt, the greedy continuation, and the median ms of one generate call."""
        return model(ids).logits, model.generate(ids, **kw), time_ms(lambda: model.generate(ids, **kw), args.iters, 1)

    hf_logits, hf_tokens, hf_ms = run()
    patch_gpt2(model)
    fk_logits, fk_tokens, fk_ms = run()
    unpatch_gpt2(model)

    print(f"GPT-2 batch={args.batch} prompt={args.prompt_len} new tokens={n} {args.dtype}")
    print(f"max |logits patched - HF| = {(fk_logits.float() - hf_logits.float()).abs().max().item():.3e}")
    same = (fk_tokens == hf_tokens).all(dim=1)
    print(f"greedy tokens identical in {int(same.sum())} of {args.batch} sequences "
          "(fp16/bf16 near-ties can make a long continuation diverge)")
    print(f"median generate time: patched {fk_ms:.1f} ms, HF {hf_ms:.1f} ms  ({hf_ms / fk_ms:.2f}x), "
          f"{args.batch * n / (fk_ms / 1e3):.1f} tokens/s patched")


if __name__ == "__main__":
    main()
