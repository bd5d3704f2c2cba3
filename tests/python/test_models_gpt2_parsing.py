"""GPT-2 checkpoints and configs the engine does not implement, or that are hostile, fail with a
ValueError naming the field, on every entry point (from_hf, from_pretrained, the C++ readers) and
before any GPU work, so these tests run on the CPU. patch_gpt2's attention honours the same
options, since patch mode keeps HF's model and supports them."""
from __future__ import annotations

import json
import struct
import time

import pytest
import torch

transformers = pytest.importorskip("transformers")

import flashkernel  # noqa: E402,F401
from flashkernel.integrations.gpt2 import _flashkernel_attention  # noqa: E402
from flashkernel.models import GPT2Engine  # noqa: E402
from flashkernel.models.gpt2 import read_config, safetensors_index  # noqa: E402

TINY = dict(n_layer=1, n_embd=64, n_head=1, vocab_size=16, n_positions=16)
UNSUPPORTED = [
    (dict(tie_word_embeddings=False), "tie_word_embeddings"),
    (dict(scale_attn_weights=False), "scale_attn_weights"),
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (dict(add_cross_attention=True), "add_cross_attention"),
]


def _tiny_model(**options):
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**TINY, **options)).eval()


@pytest.mark.parametrize("options,field", UNSUPPORTED, ids=[f for _, f in UNSUPPORTED])
def test_from_hf_rejects_unsupported_options(options, field):
    # HF runs each of these models, so loading them would silently give other logits.
    with pytest.raises(ValueError, match=f"config.{field}"):
        GPT2Engine.from_hf(_tiny_model(**options))


def test_from_hf_rejects_a_head_that_differs_from_wte():
    model = _tiny_model()
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach() + 1)  # untied by hand
    with pytest.raises(ValueError, match="lm_head"):
        GPT2Engine.from_hf(model)


@pytest.mark.parametrize("options,field", UNSUPPORTED, ids=[f for _, f in UNSUPPORTED])
def test_config_reader_rejects_unsupported_options(tmp_path, options, field):
    transformers.GPT2Config(**TINY, **options).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"config.{field}"):
        read_config(tmp_path / "config.json")
    # The supported spelling of the same options, and an option that does not change the math.
    transformers.GPT2Config(**TINY, reorder_and_upcast_attn=True).save_pretrained(tmp_path)
    assert read_config(tmp_path / "config.json")["n_layer"] == 1


def _write_checkpoint(path, config: dict, safetensors: bytes) -> None:
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(safetensors)


def _safetensors(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_from_pretrained_rejects_a_billion_layers_at_once(tmp_path):
    # Reproduced on an H200: this directory kept from_pretrained busy for over 5 minutes. The device
    # is named explicitly so that nothing before the C++ checks needs a GPU.
    _write_checkpoint(tmp_path, {"model_type": "gpt2", "n_layer": 1_000_000_000},
                      _safetensors({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)))
    start = time.monotonic()
    with pytest.raises(ValueError, match="config.n_layer"):
        GPT2Engine.from_pretrained(tmp_path, device="cuda:0")
    assert time.monotonic() - start < 5


def test_from_pretrained_rejects_an_untied_head(tmp_path):
    wte = torch.randn(16, 64)
    head = wte.clone()
    head[3, 5] += 1
    n = wte.numel() * 4
    header = {"transformer.wte.weight": {"dtype": "F32", "shape": [16, 64], "data_offsets": [0, n]},
              "lm_head.weight": {"dtype": "F32", "shape": [16, 64], "data_offsets": [n, 2 * n]}}
    _write_checkpoint(tmp_path, {"model_type": "gpt2", **TINY},
                      _safetensors(header, wte.numpy().tobytes() + head.numpy().tobytes()))
    with pytest.raises(ValueError, match="lm_head.weight"):
        GPT2Engine.from_pretrained(tmp_path, device="cuda:0")


@pytest.mark.parametrize("shape,data_bytes,why", [
    ([-2, -2], 16, "non-negative integer"),              # 4 elements by multiplication
    ([2.5, 2], 16, "non-negative integer"),              # was truncated to [2, 2]
    ([2**62 + 2048], 8192, "overflows"),                 # 2^64 + 8192 bytes wraps to the 8 KB present
    ([2**52, 4096], 0, "overflows"),                     # 2^64 elements wrap to 0
], ids=["negative", "fractional", "bytes-overflow", "numel-overflow"])
def test_safetensors_reader_rejects_bad_shapes(tmp_path, shape, data_bytes, why):
    path = tmp_path / "m.safetensors"
    path.write_bytes(_safetensors({"t": {"dtype": "F32", "shape": shape, "data_offsets": [0, data_bytes]}},
                                  bytes(data_bytes)))
    with pytest.raises(ValueError, match=why):
        safetensors_index(path)


def test_safetensors_reader_rejects_overlapping_tensors(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(_safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                   "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, bytes(24)))
    with pytest.raises(ValueError, match="overlaps"):
        safetensors_index(path)


class _Attn(torch.nn.Module):
    """The attributes transformers' GPT2Attention carries (older versions pass no `scaling`)."""

    def __init__(self, scale_attn_weights, by_layer, layer_idx, is_causal):
        super().__init__()
        self.scale_attn_weights = scale_attn_weights
        self.scale_attn_by_inverse_layer_idx = by_layer
        self.layer_idx = layer_idx
        self.is_causal = is_causal


@pytest.mark.parametrize("scale_attn_weights,by_layer,is_causal", [
    (True, False, True), (False, False, True), (True, True, True), (True, False, False),
], ids=["default", "unscaled", "by-layer", "cross-attention"])
def test_patch_attention_honours_gpt2_options(scale_attn_weights, by_layer, is_causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 16, generator=g, dtype=torch.float64) for _ in range(3))
    module = _Attn(scale_attn_weights, by_layer, layer_idx=2, is_causal=is_causal)
    out, _ = _flashkernel_attention(module, q, k, v, None, scaling=None)
    scale = (16 ** -0.5 if scale_attn_weights else 1.0) / (3.0 if by_layer else 1.0)
    scores = (q @ k.transpose(-1, -2)) * scale
    if is_causal:
        scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    ref = (scores.softmax(-1) @ v).transpose(1, 2)
    torch.testing.assert_close(out, ref)
