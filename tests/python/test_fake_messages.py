"""The fake (meta) implementations, which torch.compile traces with, reject bad arguments with the
errors the C++ ops raise when run: the same exception class and the same text up to the values
(", got ..."), which each side prints in its own language's form."""
from __future__ import annotations

import re

import pytest
import torch

import flashkernel
from helpers import gpu

ops = torch.ops.flashkernel
F16, F32 = torch.float16, torch.float32


def _tensors(device):
    def make(shape, dtype=F16):
        return torch.zeros(shape, dtype=dtype, device=device)

    return make


# name -> (call(make), exception class): each call breaks one argument rule and no earlier one.
CASES = {
    "vector_add shape": (lambda t: ops.vector_add(t((4,)), t((5,))), ValueError),
    "vector_add dtype": (lambda t: ops.vector_add(t((4,)), t((4,), F32)), TypeError),
    "attention q not 4-D": (lambda t: ops.flash_attention(t((1, 16, 64)), t((1, 2, 16, 64)), t((1, 2, 16, 64))),
                            ValueError),
    "attention k/v shape": (lambda t: ops.flash_attention(t((1, 2, 16, 64)), t((1, 2, 16, 64)), t((1, 2, 8, 64))),
                            ValueError),
    "attention head_dim": (lambda t: ops.flash_attention(t((1, 2, 16, 72)), t((1, 2, 16, 72)), t((1, 2, 16, 72))),
                           ValueError),
    "attention_varlen backend": (lambda t: ops.flash_attention_varlen(
        t((5, 2, 64)), t((5, 2, 64)), t((5, 2, 64)), t((2,), torch.int32), t((2,), torch.int32), 5, 5, False, None,
        False, -1, -1, 0.0, "sm70"), ValueError),
    "gelu_linear weight not 2-D": (lambda t: ops.gelu_linear(t((4, 64)), t((2, 8, 64))), ValueError),
    "gelu_linear in_features": (lambda t: ops.gelu_linear(t((4, 60)), t((16, 60))), ValueError),
    "reduce_sum dim": (lambda t: ops.reduce_sum(t((4, 8)), 0), ValueError),
    "add_layernorm residual shape": (lambda t: ops.add_layernorm(t((2, 8)), t((2, 4))), ValueError),
}


def _error(call, make):
    with pytest.raises((ValueError, TypeError)) as info:
        call(make)
    return info.type, _rule(str(info.value))


def _rule(message: str) -> str:
    """The message without its values: up to ", got", shapes written as C++ prints them ([2, 8])."""
    head = message.split(", got")[0]
    return re.sub(r"\((\d+(?:, \d+)*),?\)", r"[\1]", head)


@pytest.mark.parametrize("case", CASES)
def test_fake_rejects_with_the_op_error(case):
    call, exc = CASES[case]
    kind, rule = _error(call, _tensors("meta"))
    assert kind is exc, rule
    assert rule.startswith("flashkernel.") and "argument" in rule, rule


@gpu
@pytest.mark.parametrize("case", CASES)
def test_fake_and_cuda_op_say_the_same(case):
    call, _ = CASES[case]
    assert _error(call, _tensors("meta")) == _error(call, _tensors("cuda"))


@pytest.mark.parametrize("approximate", ["fast", "", "Tanh"])
def test_fake_and_op_agree_on_checks_before_the_device(approximate):
    # gelu_linear parses its string arguments before looking at the tensors' device, so the C++ op
    # answers for CPU tensors too.
    def call(t):
        return ops.gelu_linear(t((2, 8)), t((8, 8)), approximate=approximate)

    meta, cpu = _error(call, _tensors("meta")), _error(call, _tensors("cpu"))
    assert meta == cpu
    assert meta[1] == "flashkernel.gelu_linear: argument 'approximate' must be 'none' or 'tanh'"


@pytest.mark.parametrize("style", ["NeoX", "", "rotate"])
def test_python_and_op_agree_on_a_choice_argument(style):
    # rope's wrapper checks `style` in Python; the C++ op parses it before the device check.
    q, table = torch.zeros(1, 1, 4, 8), torch.zeros(4, 4)
    with pytest.raises(ValueError) as python:
        flashkernel.rope(q, q, table, table, style=style)
    with pytest.raises(ValueError) as op:
        ops.rope(q, q, table, table, None, style, None)
    assert str(python.value) == str(op.value) == (
        f"flashkernel.rope: argument 'style' must be 'neox' or 'gptj', got '{style}'")
