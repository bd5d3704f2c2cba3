"""End-to-end GPT-2 124M multi-turn and chunked prefill: the prefill time of a conversation's next
turn, and of one long prompt in chunks.

Multi-turn configs `history=H new=32`: a sequence holds H tokens (its first turn), and the next
turn brings 32 new tokens. The time is that turn's prefill (until its first token is chosen):
  flashkernel_engine_continue   GPT2Engine.generate(new, 1, sequences=[s]) on the open sequence: only
                                the new tokens are prefilled, attending to the cached history
                                (stats.prefill_ms, the engine's wall clock of its prefill)
  flashkernel_engine_recompute  GPT2Engine.generate(history + new, 1): the whole history prefilled again
                                (what a caller without multi-turn does)
  hf_past_key_values            HF's forward of the 32 new tokens with the history's DynamicCache
                                (past_key_values), wall clock, CUDA-synchronized
The goal (the multi-turn one of the attention-breadth issue): the continue rows stay flat as H grows.

Chunked prefill configs `prompt=P chunk=C`: GPT2Engine.generate(prompt, 1, prefill_chunk=C) with
impls flashkernel_engine_chunked (C > 0) and flashkernel_engine (the whole prompt in one pass);
peak_mem_mb is the engine's device_bytes() after a fresh engine ran that config (the activations
scale with the chunk).
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

OP = "e2e_gpt2_turns"
DTYPE = torch.float16
NEW = 32


def _timing(times_ms: list[float]):
    from flashkernel.bench.harness import Timing

    times_ms = sorted(times_ms)
    return Timing(statistics.median(times_ms), times_ms[len(times_ms) // 10], times_ms[(9 * len(times_ms)) // 10],
                  len(times_ms))


def configs_of(quick: bool) -> tuple[list[int], list[tuple[int, int]]]:
    histories = [64, 512] if quick else [64, 256, 512, 768, 960]
    chunks = [(960, 0), (960, 128)] if quick else [(960, 0), (960, 256), (960, 128), (960, 32)]
    return histories, chunks


def count_configs(quick: bool) -> int:
    h, c = configs_of(quick)
    return len(h) + len(c)


def run(ctx, quick: bool) -> None:
    import transformers

    from flashkernel.models import GPT2Engine

    runs = 5 if quick else 15
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval().to("cuda", DTYPE)
    engine = GPT2Engine.from_hf(hf)
    histories, chunks = configs_of(quick)
    g = torch.Generator().manual_seed(1)

    def rec(impl, config, times, note=""):
        ctx.record(OP, impl, DTYPE, config, _timing(times), note=note)
        print(f"    -> {impl}: {statistics.median(times):.3f} ms", file=sys.stderr, flush=True)

    for H in histories:
        config = f"history={H} new={NEW}"
        first = torch.randint(0, 50257, (H - 1,), generator=g).tolist()
        new = torch.randint(0, 50257, (NEW,), generator=g).tolist()
        cont, recompute, hf_times = [], [], []
        for i in range(runs + 1):  # the first round warms up (graph capture, cuBLAS heuristics)
            s = engine.open_sequence()
            try:
                history = engine.generate([first], 1, sequences=[s])[0]  # H tokens: H - 1 + 1 generated
                engine.generate([new], 1, sequences=[s])
                cont.append(engine.last_stats.prefill_ms)
            finally:
                engine.close_sequence(s)
            engine.generate([history + new], 1)
            recompute.append(engine.last_stats.prefill_ms)
            with torch.no_grad():
                past = hf(torch.tensor([history], device="cuda"), use_cache=True).past_key_values
                ids = torch.tensor([new], device="cuda")
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                hf(ids, past_key_values=past, use_cache=True)
                torch.cuda.synchronize()
                hf_times.append((time.perf_counter() - t0) * 1e3)
            if i == 0:
                cont, recompute, hf_times = [], [], []
        rec("flashkernel_engine_continue", config, cont)
        rec("flashkernel_engine_recompute", config, recompute)
        rec("hf_past_key_values", config, hf_times)

    for P, C in chunks:
        config = f"prompt={P} chunk={C}"
        prompt = torch.randint(0, 50257, (P,), generator=g).tolist()
        fresh = GPT2Engine.from_hf(hf)  # its activations sized by this config alone
        times = []
        for i in range(runs + 1):
            fresh.generate([prompt], 1, prefill_chunk=C or None)
            if i > 0:
                times.append(fresh.last_stats.prefill_ms)
        impl = "flashkernel_engine_chunked" if C else "flashkernel_engine"
        row = ctx.record(OP, impl, DTYPE, config, _timing(times))
        row["peak_mem_mb"] = f"{fresh.device_bytes() / 2**20:.1f}"
        print(f"    -> {impl} chunk={C}: {statistics.median(times):.3f} ms, {row['peak_mem_mb']} MB",
              file=sys.stderr, flush=True)
        del fresh
