"""End-to-end GPT-2 124M greedy generation: tokens/s of prompt P + G new tokens at batch B.

Impls (same fp16 weights, HF's seeded random init; the CSV's extra columns are tokens_per_s and
peak_mem_mb):
  hf_default             HF `generate` (its default SDPA attention, dynamic cache)
  torch_compile_static   a static-KV-cache GPT-2 decode written in PyTorch (KV caches as module
                         buffers updated in place, one token per step, argmax on the GPU) compiled
                         with mode="reduce-overhead" (CUDA graphs); prefill runs the same module eager
  flashkernel_patched_hf HF `generate` after flashkernel.integrations.patch_gpt2
  flashkernel_engine     flashkernel.models.GPT2Engine.generate (C++ engine, CUDA-graph decode)
Timing is wall clock of the whole call (prefill + all decode steps), CUDA-synchronized.
"""
from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

from flashkernel.bench.harness import Timing

OP = "e2e_gpt2"
DTYPE = torch.float16


class StaticGPT2(torch.nn.Module):
    """GPT-2 with a preallocated KV cache, as a careful PyTorch user writes it for torch.compile."""

    def __init__(self, hf, batch: int, max_len: int):
        super().__init__()
        t = hf.transformer
        self.cfg = hf.config
        self.wte, self.wpe = t.wte.weight, t.wpe.weight
        self.blocks = t.h
        self.ln_f = t.ln_f
        L, H, C = self.cfg.n_layer, self.cfg.n_head, self.cfg.n_embd
        self.H, self.D = H, C // H
        self.register_buffer("k_cache", torch.zeros(L, batch, H, max_len, C // H, dtype=DTYPE, device="cuda"))
        self.register_buffer("v_cache", torch.zeros(L, batch, H, max_len, C // H, dtype=DTYPE, device="cuda"))
        self.register_buffer("positions", torch.arange(max_len, device="cuda"))

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] at positions input_pos [T] -> greedy next token of the last position [B]."""
        B, T = tokens.shape
        x = self.wte[tokens] + self.wpe[input_pos][None]
        mask = self.positions[None, :] <= input_pos[:, None]  # [T, max_len]: causal over the cache
        for i, blk in enumerate(self.blocks):
            h = blk.ln_1(x)
            q, k, v = F.linear(h, blk.attn.c_attn.weight.t(), blk.attn.c_attn.bias).split(x.shape[-1], dim=-1)
            q, k, v = (z.view(B, T, self.H, self.D).transpose(1, 2) for z in (q, k, v))
            self.k_cache[i][:, :, input_pos] = k
            self.v_cache[i][:, :, input_pos] = v
            a = F.scaled_dot_product_attention(q, self.k_cache[i], self.v_cache[i], attn_mask=mask)
            x = x + F.linear(a.transpose(1, 2).reshape(B, T, -1), blk.attn.c_proj.weight.t(), blk.attn.c_proj.bias)
            h = blk.ln_2(x)
            m = F.gelu(F.linear(h, blk.mlp.c_fc.weight.t(), blk.mlp.c_fc.bias), approximate="tanh")
            x = x + F.linear(m, blk.mlp.c_proj.weight.t(), blk.mlp.c_proj.bias)
        x = self.ln_f(x[:, -1])
        return torch.argmax(x @ self.wte.t(), dim=-1)


class CompiledStatic:
    def __init__(self, hf, batch: int, max_len: int):
        self.module = StaticGPT2(hf, batch, max_len)
        self.step = torch.compile(self.module, mode="reduce-overhead", fullgraph=True)

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, gen: int) -> torch.Tensor:
        P = ids.shape[1]
        tok = self.module(ids, torch.arange(P, device="cuda"))  # prefill, eager
        out = [tok]
        for i in range(gen - 1):
            tok = self.step(tok[:, None], torch.tensor([P + i], device="cuda")).clone()
            out.append(tok)
        return torch.stack(out, dim=1)


def _timed(fn, runs: int) -> tuple[Timing, float]:
    """Median wall time of fn() (CUDA-synchronized) and peak torch memory over the runs, in MB."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    peak = torch.cuda.max_memory_allocated() / 2**20
    return Timing(statistics.median(times), times[0], times[-1], runs), peak


def run(ctx, quick: bool) -> None:
    import transformers

    from flashkernel.integrations import patch_gpt2, unpatch_gpt2
    from flashkernel.models import GPT2Engine

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval().to("cuda", DTYPE)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 50256
    engine = GPT2Engine.from_hf(hf)
    weight_mb = engine.weight_bytes() / 2**20
    gen = 16 if quick else 128
    prompts = [32, 128] if quick else [32, 128, 512]
    batches = [1, 8]
    hf_runs, fast_runs = (1, 3) if quick else (2, 7)
    compiled = {}

    def rec(impl, B, P, timing, peak, note=""):
        row = ctx.record(OP, impl, DTYPE, f"batch={B} prompt={P} gen={gen}", timing, note=note)
        if timing is not None:
            row["tokens_per_s"] = f"{B * gen / (timing.median_ms / 1e3):.1f}"
            row["peak_mem_mb"] = f"{peak:.1f}"
        print(f"    -> {impl}: {row.get('tokens_per_s', 'n/a')} tokens/s", file=sys.stderr, flush=True)

    for B in batches:
        for P in prompts:
            g = torch.Generator().manual_seed(P * 10 + B)
            ids = torch.randint(0, 50257, (B, P), generator=g).cuda()
            rows = ids.tolist()

            def hf_gen():
                with torch.no_grad():
                    hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=gen, min_new_tokens=gen,
                                do_sample=False)

            hf_gen()  # warm-up (cuBLAS handles, allocator)
            rec("hf_default", B, P, *_timed(hf_gen, hf_runs))

            try:
                if B not in compiled:
                    compiled[B] = CompiledStatic(hf, B, 1024)
                    for _ in range(3):  # compile + CUDA-graph recording happen on the first calls
                        compiled[B].generate(ids[:, :32], 4)
                cs = compiled[B]
                rec("torch_compile_static", B, P, *_timed(lambda: cs.generate(ids, gen), fast_runs))
            except Exception as e:  # record why, keep the other impls
                rec("torch_compile_static", B, P, None, 0, note=f"failed: {type(e).__name__}: {e}"[:200])

            patch_gpt2(hf)
            try:
                hf_gen()
                rec("flashkernel_patched_hf", B, P, *_timed(hf_gen, hf_runs))
            finally:
                unpatch_gpt2(hf)

            engine.generate(rows, gen)  # warm-up: captures this shape's decode graph
            timing, _ = _timed(lambda: engine.generate(rows, gen), fast_runs)
            # The engine allocates with cudaMalloc outside torch's allocator: report what it holds.
            rec("flashkernel_engine", B, P, timing, engine.device_bytes() / 2**20)
    print(f"  (weights: {weight_mb:.1f} MB fp16)", file=sys.stderr)
