"""GPT2Engine under misuse: arguments whose checks could overflow (CPU), several Python threads
sharing one engine, logits ordered after the caller's default-stream work, tensors on the wrong
device. The C++ side of the same contract is in tests/cpp/test_models_gpt2_engine_safety.cpp."""
from __future__ import annotations

import threading

import pytest
import torch

from helpers import gpu

import flashkernel  # noqa: F401
from flashkernel.models import GPT2Engine
from flashkernel.models.gpt2 import DEFAULT_CONFIG

SMALL = dict(vocab_size=1000, n_positions=256, n_embd=256, n_layer=3, n_head=4)


class _NoEngine:
    """Stands in for the C++ engine where the Python checks must answer before it is reached."""

    def __getattr__(self, name):
        raise AssertionError(f"the C++ engine was called ({name}) although the arguments are invalid")


@pytest.mark.parametrize("n", [2**63 - 1, 2**63, 2**64 + 5, DEFAULT_CONFIG["n_positions"] + 1])
def test_max_new_tokens_beyond_n_positions_is_a_clear_error(n):
    engine = GPT2Engine(_NoEngine(), 0, torch.float16, DEFAULT_CONFIG)
    with pytest.raises(ValueError, match="max_new_tokens"):
        engine.generate([[1, 2, 3]], max_new_tokens=n)


def _prompts(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, SMALL["vocab_size"], (n,), generator=g).tolist() for n in lengths]


@gpu
def test_threads_sharing_one_engine_get_their_own_results():
    engine = GPT2Engine.random(seed=5, config=SMALL)
    # Different batch sizes and lengths: each thread's calls grow buffers and capture graphs the
    # other's would use if calls could interleave.
    jobs = [(_prompts([3, 30], 1), 40), (_prompts([7, 1, 64, 12, 5, 9, 2, 33, 20], 2), 17)]
    expected = [engine.generate(p, n) for p, n in jobs]
    expected_logits = engine.logits(jobs[1][0])
    failures: list[str] = []

    def work(i):
        prompts, n = jobs[i]
        try:
            for _ in range(6):
                if engine.generate(prompts, n) != expected[i]:
                    failures.append(f"thread {i}: generate gave other tokens")
                if i == 1 and not torch.equal(engine.logits(prompts), expected_logits):
                    failures.append(f"thread {i}: logits differ")
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(f"thread {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures


@gpu
def test_logits_wait_for_work_on_the_default_stream():
    engine = GPT2Engine.random(seed=6, config=SMALL)
    rows = _prompts([33, 9], 3)
    expected = engine.logits(rows)
    assert torch.cuda.current_stream().cuda_stream == 0  # the case under test: the null stream
    for _ in range(3):
        # A block of the logits' size, freed while a kernel queued on the default stream (after a
        # long sleep) still writes it. The caching allocator hands it to the next allocation on
        # that stream, the engine's output: the engine must write it only after that kernel ran.
        scratch = torch.empty_like(expected)
        torch.cuda._sleep(200_000_000)
        scratch.fill_(float("nan"))
        del scratch
        got = engine.logits(rows)
        torch.cuda.synchronize()
        assert torch.equal(got, expected)


@gpu
def test_weights_on_another_device_are_rejected():
    engine = GPT2Engine.random(seed=0, config=SMALL)
    name = "h.0.ln_1.weight"
    with pytest.raises(ValueError, match="CPU or CUDA tensor"):
        engine._cpp.load_tensor(name, torch.ones(SMALL["n_embd"], device="meta"))
    if torch.cuda.device_count() >= 2:
        other = 1 if engine.device.index == 0 else 0
        with pytest.raises(ValueError, match="engine is on cuda"):
            engine._cpp.load_tensor(name, torch.ones(SMALL["n_embd"], device=f"cuda:{other}"))
    engine._cpp.load_tensor(name, torch.ones(SMALL["n_embd"], device=engine.device))  # the right device works
