"""The e2e_gpt2 benchmark's byte counts (the engine rows' gbps) and its environment override for the
engine's decode switch. CPU only: the module is loaded by file path, without the op library."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
GPT2_124M = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)
TINY = dict(vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=4)


def _load(name, path):
    """A module by file path: these checks need neither the compiled library nor the package."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def e2e():
    return _load("flashkernel_bench_e2e_gpt2", ROOT / "python" / "flashkernel" / "bench" / "ops" / "e2e_gpt2.py")


def test_gpt2_124m_step_bytes(e2e):
    # 12 blocks of 12*768^2 + 13*768 fp16 elements, plus the 50257 x 768 tied head.
    assert e2e.layer_weight_bytes(GPT2_124M, 2) == 170_108_928
    # gen=2: one decode step, over prompt + 1 positions.
    kv = 12 * 2 * (128 + 1) * 768 * 2
    assert e2e.decode_bytes(GPT2_124M, torch.float16, 1, 128, 2) == 170_108_928 + 50257 * 768 * 2 + kv


def test_layer_weight_bytes_match_hf_block_parameters(e2e):
    transformers = pytest.importorskip("transformers")
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**TINY))
    params = sum(p.numel() for p in model.transformer.h.parameters())
    for dtype in (torch.float16, torch.float32):
        elem = torch.tensor([], dtype=dtype).element_size()
        assert e2e.layer_weight_bytes(TINY, elem) == params * elem
    head = model.get_output_embeddings().weight
    assert head.data_ptr() == model.transformer.wte.weight.data_ptr()  # tied: counted once, as the head
    config = model.config.to_dict()  # the mapping form decode_bytes also takes
    assert e2e.decode_bytes(config, torch.float16, 1, 4, 2) == e2e.decode_bytes(TINY, torch.float16, 1, 4, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("batch,prompt,gen", [(1, 1, 1), (1, 32, 16), (3, 5, 7), (8, 128, 128), (1, 128, 1024)])
def test_decode_bytes_sum_over_steps(e2e, dtype, batch, prompt, gen):
    elem = torch.tensor([], dtype=dtype).element_size()
    C, L, V = TINY["n_embd"], TINY["n_layer"], TINY["vocab_size"]
    weights = e2e.layer_weight_bytes(TINY, elem) + V * C * elem
    expected = 0
    generated = 1  # prefill gives the first token; every later token is one decode step
    while generated < gen:
        length = prompt + generated
        expected += weights + batch * L * 2 * length * C * elem
        generated += 1
    assert e2e.decode_bytes(TINY, dtype, batch, prompt, gen) == expected


def test_decode_bytes_grow_with_each_input(e2e):
    base = e2e.decode_bytes(GPT2_124M, torch.float16, 1, 128, 128)
    assert e2e.decode_bytes(GPT2_124M, torch.float16, 2, 128, 128) > base
    assert e2e.decode_bytes(GPT2_124M, torch.float16, 1, 512, 128) > base
    assert e2e.decode_bytes(GPT2_124M, torch.float16, 1, 128, 129) > base
    assert e2e.decode_bytes(GPT2_124M, torch.float32, 1, 128, 128) == 2 * base


def test_env_override_restores_a_previous_value(e2e, monkeypatch):
    monkeypatch.setenv(e2e.DECODE_ENV, "persistent")
    with e2e.env_override(e2e.DECODE_ENV, "graph"):
        assert os.environ[e2e.DECODE_ENV] == "graph"
    assert os.environ[e2e.DECODE_ENV] == "persistent"


def test_env_override_removes_what_was_unset_even_on_errors(e2e, monkeypatch):
    monkeypatch.delenv(e2e.DECODE_ENV, raising=False)
    with pytest.raises(RuntimeError, match="construction failed"):
        with e2e.env_override(e2e.DECODE_ENV, "graph"):
            assert os.environ[e2e.DECODE_ENV] == "graph"
            raise RuntimeError("construction failed")
    assert e2e.DECODE_ENV not in os.environ
