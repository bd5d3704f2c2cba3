"""GPT2Engine and patch_gpt2 against HuggingFace transformers on the same weights.

The model is GPT-2 124M with HF's own random initialization (seeded; nothing is downloaded).

Tolerances (stated once, used everywhere):
  * teacher-forced logits: our max error against HF in float32 is at most 3x HF's own error in the
    same low precision (plus a small floor);
  * greedy generation: tokens must equal HF's; a divergence is allowed only at a step where HF's
    top-1/top-2 logit margin is below MARGIN_TOL[dtype] (rounding of that size can flip the
    choice; after it the sequences legitimately differ, so comparison stops). The test prints
    every divergence with its margin.
"""
from __future__ import annotations

import json

import pytest
import torch

from helpers import fresh_generator, gpu

transformers = pytest.importorskip("transformers")

import flashkernel  # noqa: E402,F401
from flashkernel.models import GPT2Engine  # noqa: E402
from flashkernel.models.gpt2 import read_config, safetensors_index  # noqa: E402

MARGIN_TOL = {torch.float16: 0.02, torch.bfloat16: 0.15}
NEW_TOKENS = 128


def _hf_model(dtype, seed):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config()
    model = transformers.GPT2LMHeadModel(cfg).eval()
    # Greedy runs to max_new_tokens (a random model may emit 50256); pad with 50256 in batches.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 50256
    return model.to("cuda", dtype)


@pytest.fixture(scope="module", params=[torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def hf_and_engine(request):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible: GPU test skipped")
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    model = _hf_model(request.param, seed)
    engine = GPT2Engine.from_hf(model)
    return model, engine, request.param, seed


def _prompts(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 50257, (n,), generator=g).tolist() for n in lengths]


def _compare_greedy(ours: list[int], hf: list[int], hf_scores: list[torch.Tensor], tol: float, what: str) -> str:
    """Checks the margin rule; returns a one-line report."""
    for i, (a, b) in enumerate(zip(ours, hf)):
        if a != b:
            top2 = torch.topk(hf_scores[i].float(), 2).values
            margin = (top2[0] - top2[1]).item()
            assert margin < tol, (f"{what}: diverges at step {i} (ours {a}, HF {b}) where HF's top-1/top-2 margin "
                                  f"{margin:.4f} >= tolerance {tol}")
            return f"{what}: equal for {i} tokens, then a near-tie (margin {margin:.4f} < {tol})"
    assert len(ours) == len(hf)
    return f"{what}: all {len(ours)} tokens equal"


@gpu
def test_teacher_forced_logits_match_hf(hf_and_engine):
    model, engine, dtype, seed = hf_and_engine
    ids = torch.tensor(_prompts([61, 61], seed), device="cuda")
    ours = engine.logits(ids)
    with torch.no_grad():
        hf_lowp = model(ids).logits.float()
        ref = model.float()(ids).logits
        model.to(dtype)
    assert not torch.isnan(ours).any()
    err = (ours - ref).abs().max().item()
    hf_err = (hf_lowp - ref).abs().max().item()
    print(f"[{dtype}] logits max error: engine {err:.4e}, HF {dtype} {hf_err:.4e}")
    assert err <= 3 * hf_err + 1e-3, f"engine error {err:.3e} > 3 x HF's {hf_err:.3e}"
    # Mixed lengths (list input): each sequence from position 0, concatenated.
    rows = _prompts([1, 9, 40], seed + 1)
    packed = engine.logits(rows)
    at = 0
    for r in rows:
        with torch.no_grad():
            ref_r = model(torch.tensor([r], device="cuda")).logits[0].float()
        assert (packed[at:at + len(r)] - ref_r).abs().max().item() <= 3 * hf_err + 1e-3
        at += len(r)


def _hf_greedy(model, rows):
    """HF generate on left-padded rows: new tokens and per-step scores."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), 50256, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    with torch.no_grad():
        out = model.generate(ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=NEW_TOKENS, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    new = out.sequences[:, width:].cpu()
    logits = torch.stack(out.logits, dim=1).cpu()  # [B, steps, vocab]
    return new, logits


@gpu
def test_greedy_generation_matches_hf(hf_and_engine):
    model, engine, dtype, seed = hf_and_engine
    tol = MARGIN_TOL[dtype]
    reports = []
    # Several single prompts, then a mixed-length batch (HF left-pads it; the engine needs no padding).
    for lengths in ([5], [32], [200], [3, 17, 64, 128]):
        rows = _prompts(lengths, seed + sum(lengths))
        hf_new, hf_logits = _hf_greedy(model, rows)
        ours = engine.generate(rows, NEW_TOKENS)
        for b, r in enumerate(rows):
            reports.append(_compare_greedy(ours[b][len(r):], hf_new[b].tolist(), list(hf_logits[b]), tol,
                                           f"[{dtype}] prompt {len(r)} (batch {len(rows)})"))
    print("\n".join(reports))
    assert engine.last_stats.decode_steps == NEW_TOKENS - 1


@gpu
@pytest.mark.parametrize("mode", ["auto", "graph", "pdl", "fused", "persistent"])
def test_each_decode_path_matches_hf(hf_and_engine, monkeypatch, mode):
    """Every decode step: the persistent kernel (batch <= 8), the chain of kernels in a CUDA graph,
    that chain with programmatic dependent launches, the fused 5-kernel layers, and the default's
    choice among them (FLASHKERNEL_GPT2_DECODE, read when the engine is built): fused up to batch 2
    (the C++ kAutoFusedMaxBatch) on a 9.x GPU, else the dependent-launch chain."""
    model, _, dtype, seed = hf_and_engine
    monkeypatch.setenv("FLASHKERNEL_GPT2_DECODE", mode)
    engine = GPT2Engine.from_hf(model)
    reports = []
    for lengths in ([7], [5, 33], [3, 17, 64, 200, 1, 9, 31, 120]):
        rows = _prompts(lengths, seed + 7 * sum(lengths))
        hf_new, hf_logits = _hf_greedy(model, rows)
        ours = engine.generate(rows, NEW_TOKENS)
        assert engine.last_stats.persistent_decode == (mode == "persistent")
        hopper = torch.cuda.get_device_capability()[0] >= 9
        assert engine.last_stats.fused_decode == (mode == "fused" or (mode == "auto" and len(rows) <= 2 and hopper))
        for b, r in enumerate(rows):
            reports.append(_compare_greedy(ours[b][len(r):], hf_new[b].tolist(), list(hf_logits[b]), MARGIN_TOL[dtype],
                                           f"[{dtype}, {mode}] prompt {len(r)} (batch {len(rows)})"))
    print("\n".join(reports))


@gpu
def test_decode_path_property_switches_the_path(hf_and_engine, monkeypatch):
    """engine.decode_path, set without the environment variable: the stats follow it, pdl gives the
    plain graph's tokens (same kernels), fused reports its layers, a bad name is a ValueError."""
    model, _, dtype, seed = hf_and_engine
    monkeypatch.delenv("FLASHKERNEL_GPT2_DECODE", raising=False)
    engine = GPT2Engine.from_hf(model)
    assert engine.decode_path == "auto"
    rows = _prompts([11], seed + 3)
    tokens = {}
    for path in ("graph", "pdl", "fused", "auto"):
        engine.decode_path = path
        assert engine.decode_path == path
        tokens[path] = engine.generate(rows, 16)
        hopper = torch.cuda.get_device_capability()[0] >= 9
        assert engine.last_stats.fused_decode == (path == "fused" or (path == "auto" and hopper))
        assert not engine.last_stats.persistent_decode
    assert tokens["pdl"] == tokens["graph"]
    with pytest.raises(ValueError, match="decode_path"):
        engine.decode_path = "fast"
    assert engine.decode_path == "auto"


def test_decode_path_setter_checks_the_name_before_the_engine():
    """CPU: the wrapper refuses an unknown path itself and passes a known one to the C++ engine."""
    class _Stub:
        def __init__(self):
            self.paths = []

        def set_decode_path(self, path):
            self.paths.append(path)

    engine = GPT2Engine.__new__(GPT2Engine)
    engine._cpp = _Stub()
    for bad in ("", "Fused", "fast", None, 1):
        with pytest.raises(ValueError, match="argument 'decode_path' must be one of auto, graph, pdl, fused, persistent"):
            engine.decode_path = bad
    engine.decode_path = "fused"
    assert engine._cpp.paths == ["fused"]


@gpu
def test_patch_mode_matches_hf(hf_and_engine):
    from flashkernel.integrations import patch_gpt2, unpatch_gpt2

    model, _, dtype, seed = hf_and_engine
    tol = MARGIN_TOL[dtype]
    rows = _prompts([24, 24], seed + 7)
    hf_new, hf_logits = _hf_greedy(model, rows)
    with torch.no_grad():
        ids = torch.tensor(rows, device="cuda")
        plain = model(ids).logits.float()
    patch_gpt2(model)
    try:
        with torch.no_grad():
            patched = model(ids).logits.float()
        diff = (patched - plain).abs().max().item()
        print(f"[{dtype}] patched forward vs HF: max logit difference {diff:.4e}")
        assert diff < tol, f"patched forward differs from HF's by {diff:.4e}"
        new, _ = _hf_greedy(model, rows)
        for b in range(len(rows)):
            print(_compare_greedy(new[b].tolist(), hf_new[b].tolist(), list(hf_logits[b]), tol,
                                  f"[{dtype}] patched prompt {b}"))
    finally:
        unpatch_gpt2(model)


@gpu
def test_sampling_reproducible_for_a_seed(hf_and_engine):
    _, engine, dtype, seed = hf_and_engine
    rows = _prompts([8, 20], seed + 3)
    kw = dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.95)
    a = engine.generate(rows, 32, seed=seed, **kw)
    assert engine.generate(rows, 32, seed=seed, **kw) == a
    assert engine.generate(rows, 32, seed=seed + 1, **kw) != a
    # top_k=1 sampling is greedy whatever the seed.
    assert engine.generate(rows, 32, do_sample=True, top_k=1, seed=seed) == engine.generate(rows, 32)
    # Sampled tokens stay inside the top-k set of the teacher-forced logits, up to the rounding
    # between the two forward paths (decode with the paged cache vs one prefill): the sampler saw
    # the decode path's logits, so a token tied with the 5th within MARGIN_TOL may rank 6th here.
    out = engine.generate([rows[0]], 8, do_sample=True, top_k=5, seed=seed)[0]
    logits = engine.logits([out[:-1]]).float()
    for i, tok in enumerate(out[len(rows[0]):]):
        row = logits[len(rows[0]) - 1 + i]
        top5 = torch.topk(row, 5)
        fifth = top5.values[-1].item()
        assert row[tok].item() >= fifth - MARGIN_TOL[dtype], (
            f"step {i}: sampled {tok} (logit {row[tok].item():.4f}) outside the top-5 "
            f"{top5.indices.tolist()} (5th logit {fifth:.4f}, tolerance {MARGIN_TOL[dtype]})")


@gpu
def test_from_pretrained_save_pretrained_checkpoint(hf_and_engine, tmp_path):
    model, engine, dtype, seed = hf_and_engine
    model.save_pretrained(tmp_path)  # model.safetensors + config.json
    loaded = GPT2Engine.from_pretrained(tmp_path, dtype=dtype)
    rows = _prompts([13, 50], seed + 5)
    a, b = loaded.logits(rows), engine.logits(rows)
    assert torch.equal(a, b), f"checkpoint-loaded logits differ by {(a - b).abs().max().item():.3e}"
    assert loaded.generate(rows, 16) == engine.generate(rows, 16)


@gpu
def test_bad_inputs_raise_clear_errors(hf_and_engine):
    _, engine, _, _ = hf_and_engine
    with pytest.raises(ValueError, match="input_ids"):
        engine.generate(torch.zeros((1, 0), dtype=torch.long), 4)
    with pytest.raises(ValueError, match="prompts"):
        engine.generate([[1, 2], []], 4)
    with pytest.raises(ValueError, match="n_positions"):
        engine.generate([[1] * 1000], 25)
    engine.generate([[1] * 1000], 24)  # exactly 1024 positions is fine
    with pytest.raises(TypeError, match="input_ids"):
        engine.generate(torch.zeros((1, 4)), 4)
    with pytest.raises(ValueError, match="vocab_size"):
        engine.generate([[50257]], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.generate([[1]], 0)
    with pytest.raises(ValueError, match="temperature"):
        engine.generate([[1]], 2, do_sample=True, temperature=0.0)
    with pytest.raises(TypeError, match="dtype"):
        GPT2Engine.random(0, dtype=torch.float32)


def _agreement(ours: list[int], hf: list[int]) -> int:
    """Leading tokens equal to HF's (after the first difference the sequences legitimately differ)."""
    n = 0
    while n < min(len(ours), len(hf)) and ours[n] == hf[n]:
        n += 1
    return n


@gpu
def test_fp8_kv_cache_greedy_agreement_with_hf(hf_and_engine):
    """GPT2Engine(kv_dtype=torch.float8_e4m3fn): the decode steps read K/V stored in e4m3 (scale
    1.0), so greedy tokens may drift from HF's where two logits are close; 100% agreement is not
    required. Reported: the agreement rate (leading tokens equal to HF's, over all prompts), next to
    the 16-bit-cache engine's on the same prompts. Checked: the first new token (prefill reads no
    cache) equals the 16-bit engine's exactly, and at least a quarter of the tokens agree (a broken
    FP8 path, a wrong scale or head, diverges within a few steps)."""
    model, engine16, dtype, seed = hf_and_engine
    engine8 = GPT2Engine.from_hf(model, kv_dtype=torch.float8_e4m3fn)
    assert engine8.kv_dtype == torch.float8_e4m3fn
    agree = {8: 0, 16: 0}
    total = 0
    reports = []
    for lengths in ([5], [32], [200], [3, 17, 64, 128]):
        rows = _prompts(lengths, seed + 3 * sum(lengths))
        hf_new, _ = _hf_greedy(model, rows)
        ours8, ours16 = engine8.generate(rows, NEW_TOKENS), engine16.generate(rows, NEW_TOKENS)
        for b, r in enumerate(rows):
            t8, t16, hf = ours8[b][len(r):], ours16[b][len(r):], hf_new[b].tolist()
            assert t8[0] == t16[0], f"prompt {len(r)}: the first token comes from prefill and must not change"
            agree[8] += _agreement(t8, hf)
            agree[16] += _agreement(t16, hf)
            total += len(hf)
            reports.append(f"[{dtype}] prompt {len(r)}: fp8 cache agrees for {_agreement(t8, hf)}/{len(hf)} tokens, "
                           f"16-bit cache {_agreement(t16, hf)}/{len(hf)}")
    rate8, rate16 = agree[8] / total, agree[16] / total
    print("\n".join(reports) + f"\n[{dtype}] greedy agreement with HF: fp8 cache {rate8:.3f}, 16-bit cache {rate16:.3f}")
    assert rate8 >= 0.25, f"fp8-cache greedy agreement {rate8:.3f} (16-bit cache: {rate16:.3f})"


def test_bad_kv_dtype_is_refused_before_any_work():
    for kv_dtype in (torch.float32, torch.float8_e5m2, torch.int8):
        with pytest.raises(TypeError, match="argument 'kv_dtype'"):
            GPT2Engine.random(0, kv_dtype=kv_dtype)
    with pytest.raises(TypeError, match="argument 'kv_dtype'"):
        GPT2Engine.random(0, dtype=torch.float16, kv_dtype=torch.bfloat16)


@gpu
def test_random_engine_is_seeded():
    a = GPT2Engine.random(seed=11)
    b = GPT2Engine.random(seed=11)
    c = GPT2Engine.random(seed=12)
    rows = [[1, 2, 3, 4]]
    assert torch.equal(a.logits(rows), b.logits(rows))
    assert not torch.equal(a.logits(rows), c.logits(rows))


@gpu
def test_streamed_tokens_equal_generate():
    """generate_stream yields, step by step, exactly generate()'s new tokens (greedy, prompts of
    different lengths), also with EOS padding after an early stop; a second stream while one runs
    is refused, and closing a stream early leaves the engine usable."""
    engine = GPT2Engine.random(seed=5, config=dict(n_layer=2))
    rows = _prompts([3, 17, 9], 5)
    new = 40
    expected = torch.tensor([r[len(p):] for r, p in zip(engine.generate(rows, new), rows)])
    streamed = list(engine.generate_stream(rows, new))
    assert len(streamed) == new and all(s.shape == (len(rows),) and s.dtype == torch.long for s in streamed)
    assert torch.equal(torch.stack(streamed, dim=1), expected)
    # EOS = the first token of both rows: generation stops early, and the padding steps are streamed too.
    twins = [rows[0], rows[0]]
    eos = engine.generate(twins, 1)[0][-1]  # this batch shape's own first token (rounding may differ per shape)
    padded = torch.tensor([r[len(rows[0]):] for r in engine.generate(twins, new, eos_token_id=eos)])
    assert torch.equal(padded, torch.full_like(padded, eos))
    assert torch.equal(torch.stack(list(engine.generate_stream(twins, new, eos_token_id=eos)), dim=1), padded)
    first = engine.generate_stream(rows, new)
    next(first)
    with pytest.raises(RuntimeError, match="already open"):
        next(engine.generate_stream(rows, new))
    first.close()
    assert torch.equal(torch.stack(list(engine.generate_stream(rows, new)), dim=1), expected)
    with pytest.raises(ValueError, match="max_new_tokens"):
        next(engine.generate_stream(rows, 0))


# ---------------------------------------------------------------- CPU: the C++ readers
def test_config_reader(tmp_path):
    cfg = transformers.GPT2Config(n_layer=3, n_embd=256, n_head=4, vocab_size=999, n_positions=128)
    cfg.save_pretrained(tmp_path)
    got = read_config(tmp_path / "config.json")
    assert (got["n_layer"], got["n_embd"], got["n_head"], got["vocab_size"], got["n_positions"]) == (3, 256, 4, 999, 128)
    (tmp_path / "bad.json").write_text(json.dumps({"activation_function": "relu"}))
    with pytest.raises(ValueError, match="activation_function"):
        read_config(tmp_path / "bad.json")


def test_safetensors_reader(tmp_path):
    from safetensors.torch import save_file

    g, seed = fresh_generator()
    tensors = {"a": torch.randn(3, 5, generator=g), "b.weight": torch.randn(7, generator=g).half(),
               "c": torch.randn(2, 2, 2, generator=g).bfloat16()}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    index = safetensors_index(tmp_path / "m.safetensors")
    want = {k: (str(v.dtype).replace("torch.", ""), tuple(v.shape)) for k, v in tensors.items()}
    assert index == want, f"seed {seed}"
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ValueError, match="header length"):
        safetensors_index(tmp_path / "bad.safetensors")
    (tmp_path / "bad2.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{x")
    with pytest.raises(RuntimeError, match="invalid JSON"):
        safetensors_index(tmp_path / "bad2.safetensors")
