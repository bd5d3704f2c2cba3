"""End-to-end GPT-2 124M greedy generation: tokens/s of prompt P + G new tokens at batch B.

Impls (same fp16 weights, HF's seeded random init; the CSV's extra columns are tokens_per_s and
peak_mem_mb):
  hf_default               HF `generate` (its default SDPA attention, dynamic cache)
  torch_compile_static     a static-KV-cache GPT-2 decode written in PyTorch (KV caches as module
                           buffers updated in place, one token per step, argmax on the GPU) compiled
                           with mode="reduce-overhead" (CUDA graphs); prefill runs the same module eager
  flashkernel_patched_hf   HF `generate` after flashkernel.integrations.patch_gpt2
  flashkernel_engine       flashkernel.models.GPT2Engine.generate (C++ engine), built with the
                           environment as it is: the decode path FLASHKERNEL_GPT2_DECODE selects, by
                           default "auto" (fused at batch 1-2 on a 9.x GPU, else pdl; before 1.1.0 the
                           default was the plain graph, and at commit b55b3c3 only the persistent step)
  flashkernel_engine_graph the same engine built with FLASHKERNEL_GPT2_DECODE=graph (one CUDA-graph
                           replay of the per-op kernels per step, ordinary launches; in CSVs of the
                           commits where the persistent step was the default, this name is that A/B)
  flashkernel_engine_persistent ... with FLASHKERNEL_GPT2_DECODE=persistent (one cooperative kernel
                           for all layers of a step)
  flashkernel_engine_pdl   the same engine built with FLASHKERNEL_GPT2_DECODE=pdl (the graph path with
                           every kernel after the embedding launched as a programmatic dependent)
  flashkernel_engine_fused ... with FLASHKERNEL_GPT2_DECODE=fused (dependent launches and 5 kernels
                           per layer: LayerNorms, residual adds, GeLU, KV append folded into the GEMVs)
  device_copy              torch `dst.copy_(src)` of a 256 MiB buffer, timed with CUDA events by the
                           harness: the in-run HBM bandwidth reference for the engine rows' gbps
Timing (all but device_copy) is wall clock of the whole call (prefill + all decode steps), CUDA-synchronized.

gbps: engine rows count the bytes the decode steps must read (decode_bytes: every layer's weights,
the tied LM head and the K/V each sequence has so far, per step) over the median time of the whole
call, prefill included, so it is a lower bound on the decode steps' own bandwidth; device_copy rows
count read + write. Engine gbps / device_copy gbps is the fraction of the copy bandwidth reached.

Configs: prompt 32/128/512 x batch 1/8 at gen 128 (--quick: prompt 32/128, gen 16), plus in the
full sweep batch 32 (prompt 128, gen 128) and gen 1024 at batch 1 (prompt 128). GPT-2's position
table has 1024 rows, fewer than prompt + gen = 1152, so that config runs a model with
n_positions=1152 (config key n_positions=1152): the same layer and head shapes, so the same work per
decode step, with a longer position table.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from typing import TYPE_CHECKING, Iterator, Mapping

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from flashkernel.bench.harness import Timing

OP = "e2e_gpt2"
DTYPE = torch.float16
# The switch the C++ engine reads when it is constructed: auto | graph | pdl | fused | persistent.
DECODE_ENV = "FLASHKERNEL_GPT2_DECODE"
COPY_BYTES = 256 * 2**20
# HF generate runs at ~25-230 tokens/s at batch 1 (one Python-driven step per token: DESIGN.md's
# anchors, the committed rows). Past this many new tokens its two impls are not timed (rows with a
# note say so): gen=1024 costs 4-40 s a call, 0.5-4 minutes for both impls' warm-up and timed calls,
# about as long as all their other rows together, to measure again the per-token overhead that the
# gen=128 rows already show.
HF_MAX_GEN = 128


def layer_weight_bytes(config: Mapping, element_size: int) -> int:
    """Bytes of the weights and biases of all `config["n_layer"]` GPT-2 blocks. Per block, with
    C = n_embd and the MLP width 4C (all the engine runs): ln_1 and ln_2 (2C each), attn.c_attn
    (C x 3C + 3C), attn.c_proj (C x C + C), mlp.c_fc (C x 4C + 4C), mlp.c_proj (4C x C + C):
    12 C^2 + 13 C elements."""
    C = int(config["n_embd"])
    return int(config["n_layer"]) * (12 * C * C + 13 * C) * element_size


def decode_bytes(config: Mapping, dtype: torch.dtype, batch: int, prompt: int, gen: int) -> int:
    """Bytes the decode steps of one greedy `generate` of `gen` new tokens read, at least: prefill
    gives the first token, then each of the gen - 1 decode steps reads every layer's weights
    (layer_weight_bytes), the LM head (the tied wte, vocab_size x n_embd) and, for each of the
    `batch` sequences, the K and V of every layer over its current length (prompt + tokens generated
    so far): n_layer * 2 * length * n_embd elements. Embedding rows, ln_f and activations are left
    out (well under 0.1% at GPT-2 sizes). `config` maps n_layer, n_embd and vocab_size to ints (a
    GPT2Engine's `config`, a transformers GPT2Config's to_dict())."""
    elem = torch.tensor([], dtype=dtype).element_size()
    C, n_layer = int(config["n_embd"]), int(config["n_layer"])
    weights = layer_weight_bytes(config, elem) + int(config["vocab_size"]) * C * elem
    steps = max(gen - 1, 0)
    # The step after `done` generated tokens attends over prompt + done positions.
    kv_lengths = sum(prompt + done for done in range(1, gen))
    return steps * weights + batch * n_layer * 2 * C * elem * kv_lengths


@contextlib.contextmanager
def env_override(name: str, value: str) -> Iterator[None]:
    """os.environ[name] = value inside the block; the previous value (or its absence) after it,
    also when the block raises."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


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
    # Imported here, not at the top, so that the byte counts above load without the op library.
    from flashkernel.bench.harness import Timing

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


def _engines(hf) -> dict:
    """impl -> GPT2Engine on hf's weights: the decode path the environment gives, and the graph,
    pdl, fused and persistent ones. The engine reads DECODE_ENV when it is constructed, so the override covers
    construction only."""
    from flashkernel.models import GPT2Engine

    engines = {"flashkernel_engine": GPT2Engine.from_hf(hf)}
    for mode in ("graph", "pdl", "fused", "persistent"):
        with env_override(DECODE_ENV, mode):
            engines[f"flashkernel_engine_{mode}"] = GPT2Engine.from_hf(hf)
    return engines


def _time_device_copy(ctx):
    """dst.copy_(src) of COPY_BYTES, timed by the harness (CUDA events, median of many runs)."""
    n = COPY_BYTES // torch.tensor([], dtype=DTYPE).element_size()
    sets = ctx.rotating(lambda: (torch.empty(n, dtype=DTYPE, device="cuda"),
                                 torch.randn(n, device="cuda", dtype=DTYPE)), 2 * COPY_BYTES)
    timing = ctx.time(lambda dst, src: dst.copy_(src), sets)
    del sets
    torch.cuda.empty_cache()
    return timing


def configs_of(quick: bool) -> list[tuple[int, int, int]]:
    """(batch, prompt, generated tokens) of the sweep."""
    gen = 16 if quick else 128
    prompts = [32, 128] if quick else [32, 128, 512]
    configs = [(B, P, gen) for B in (1, 8) for P in prompts]
    if not quick:
        configs += [(32, 128, gen), (1, 128, 1024)]
    return configs


def count_configs(quick: bool) -> int:
    """Configurations run(ctx, quick) measures, for the progress display."""
    return len(configs_of(quick))


def run(ctx, quick: bool) -> None:
    import transformers

    from flashkernel.integrations import patch_gpt2, unpatch_gpt2

    configs = configs_of(quick)
    hf_runs, fast_runs = (1, 3) if quick else (2, 7)
    base_positions = transformers.GPT2Config().n_positions
    models = {}  # n_positions -> (HF model, engines); more than GPT-2's 1024 only where prompt + gen need it
    compiled = {}
    user_decode = os.environ.get(DECODE_ENV)
    engine_note = {"flashkernel_engine": f"{DECODE_ENV}={user_decode} in the environment" if user_decode else ""}

    def model(n_positions):
        if n_positions not in models:
            torch.manual_seed(0)
            cfg = transformers.GPT2Config(n_positions=n_positions)
            hf = transformers.GPT2LMHeadModel(cfg).eval().to("cuda", DTYPE)
            hf.generation_config.eos_token_id = None
            hf.generation_config.pad_token_id = 50256
            models[n_positions] = hf, _engines(hf)
        return models[n_positions]

    def rec(impl, config, B, gen, timing, peak, note="", bytes_moved=None):
        row = ctx.record(OP, impl, DTYPE, config, timing, bytes_moved=bytes_moved, note=note)
        if timing is not None:
            row["tokens_per_s"] = f"{B * gen / (timing.median_ms / 1e3):.1f}"
            row["peak_mem_mb"] = f"{peak:.1f}"
        print(f"    -> {impl}: {row.get('tokens_per_s', 'n/a')} tokens/s", file=sys.stderr, flush=True)

    for B, P, gen in configs:
        n_positions = max(base_positions, P + gen)
        hf, engines = model(n_positions)
        config = f"batch={B} prompt={P} gen={gen}"
        if n_positions != base_positions:
            config += f" n_positions={n_positions}"
        g = torch.Generator().manual_seed(P * 10 + B)
        ids = torch.randint(0, 50257, (B, P), generator=g).cuda()
        rows = ids.tolist()

        def hf_gen():
            with torch.no_grad():
                hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=gen, min_new_tokens=gen,
                            do_sample=False)

        if gen > HF_MAX_GEN:
            rec("hf_default", config, B, gen, None, 0, note=f"skipped: gen > {HF_MAX_GEN} (HF_MAX_GEN)")
        else:
            hf_gen()  # warm-up (cuBLAS handles, allocator)
            rec("hf_default", config, B, gen, *_timed(hf_gen, hf_runs))

        try:
            key = (B, n_positions)
            if key not in compiled:
                compiled[key] = CompiledStatic(hf, B, n_positions)
                for _ in range(3):  # compile + CUDA-graph recording happen on the first calls
                    compiled[key].generate(ids[:, :32], 4)
            cs = compiled[key]
            rec("torch_compile_static", config, B, gen, *_timed(lambda: cs.generate(ids, gen), fast_runs))
        except Exception as e:  # record why, keep the other impls
            rec("torch_compile_static", config, B, gen, None, 0, note=f"failed: {type(e).__name__}: {e}"[:200])

        if gen > HF_MAX_GEN:
            rec("flashkernel_patched_hf", config, B, gen, None, 0, note=f"skipped: gen > {HF_MAX_GEN} (HF_MAX_GEN)")
        else:
            patch_gpt2(hf)
            try:
                hf_gen()
                rec("flashkernel_patched_hf", config, B, gen, *_timed(hf_gen, hf_runs))
            finally:
                unpatch_gpt2(hf)

        for impl, engine in engines.items():
            engine.generate(rows, gen)  # warm-up: the graph path captures this shape's decode graph here
            timing, _ = _timed(lambda: engine.generate(rows, gen), fast_runs)
            # The engine allocates with cudaMalloc outside torch's allocator: report what it holds.
            rec(impl, config, B, gen, timing, engine.device_bytes() / 2**20, note=engine_note.get(impl, ""),
                bytes_moved=decode_bytes(engine.config, engine.dtype, B, P, gen))

        ctx.record(OP, "device_copy", DTYPE, config, _time_device_copy(ctx), bytes_moved=2 * COPY_BYTES)
    weight_mb = models[base_positions][1]["flashkernel_engine"].weight_bytes() / 2**20
    print(f"  (weights: {weight_mb:.1f} MB fp16)", file=sys.stderr)
