"""GPT2Engine multi-turn continuation (open_sequence + generate(..., sequences=)) and chunked
prefill (prefill_chunk=) against HuggingFace transformers on the same weights.

Reference: HF's teacher-forced logits over the engine's own history (every prompt and generated
token of the sequence). Each token the engine generated must be HF's greedy choice at its position
given the same history, unless HF's top-1/top-2 margin there is below MARGIN_TOL[dtype] (rounding
of that size can flip the choice). Teacher forcing on the engine's tokens checks every generated
position, also after a near-tie.
"""
from __future__ import annotations

import pytest
import torch

from helpers import gpu

transformers = pytest.importorskip("transformers")

import flashkernel  # noqa: E402,F401
from flashkernel.models import GPT2Engine  # noqa: E402

MARGIN_TOL = {torch.float16: 0.02, torch.bfloat16: 0.15}
GEN = 24


@pytest.fixture(scope="module", params=[torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def hf_and_engine(request):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible: GPU test skipped")
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    torch.manual_seed(seed)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval().to("cuda", request.param)
    return model, GPT2Engine.from_hf(model), request.param, seed


def _rows(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 50257, (n,), generator=g).tolist() for n in lengths]


def _check_against_hf(model, history: list[int], generated: int, tol: float, what: str) -> int:
    """The last `generated` tokens of `history` against HF's logits over `history`; returns the
    number of near-tie positions where the engine chose HF's second choice."""
    with torch.no_grad():
        logits = model(torch.tensor([history], device="cuda")).logits[0].float()
    ties = 0
    for pos in range(len(history) - generated, len(history)):
        scores = logits[pos - 1]
        top2 = torch.topk(scores, 2)
        if history[pos] != top2.indices[0].item():
            margin = (top2.values[0] - top2.values[1]).item()
            assert margin < tol, (f"{what}: token {pos} is {history[pos]}, HF's greedy choice is "
                                  f"{top2.indices[0].item()} with margin {margin:.4f} >= {tol}")
            ties += 1
    return ties


@gpu
def test_multi_turn_matches_hf_on_the_whole_history(hf_and_engine):
    """Three sequences, three turns each, lengths around the page size (16); a turn may be empty
    (generation goes on). Each turn prefills only its own tokens over the cached history."""
    model, engine, dtype, seed = hf_and_engine
    tol = MARGIN_TOL[dtype]
    seqs = [engine.open_sequence() for _ in range(3)]
    histories = [[] for _ in seqs]
    turns = [[1, 17, 100], [15, 0, 16], [33, 1, 7]]
    ties = 0
    try:
        for t, lengths in enumerate(turns):
            rows = _rows(lengths, seed + 7 * t)
            out = engine.generate(rows, GEN, sequences=seqs)
            for b, s in enumerate(seqs):
                assert out[b][:len(rows[b])] == rows[b]
                histories[b] += out[b]
                assert engine.sequence_length(s) == len(histories[b])
                ties += _check_against_hf(model, histories[b], GEN, tol, f"[{dtype}] turn {t} row {b}")
        print(f"[{dtype}] multi-turn: {ties} near-tie choice(s) in {len(turns) * len(seqs) * GEN} tokens")
    finally:
        for s in seqs:
            engine.close_sequence(s)
    assert not set(seqs) & set(engine.open_sequences())


@gpu
@pytest.mark.parametrize("chunk", [1, 7, 16, 50])
def test_chunked_prefill_matches_hf(hf_and_engine, chunk):
    model, engine, dtype, seed = hf_and_engine
    rows = _rows([1, 15, 17, 100, 300], seed + chunk)
    out = engine.generate(rows, GEN, prefill_chunk=chunk)
    for b, r in enumerate(out):
        _check_against_hf(model, r, GEN, MARGIN_TOL[dtype], f"[{dtype}] chunk {chunk} prompt {len(rows[b])}")
    # Chunks on a continued sequence too: a 90-token turn over a 40-token history, in 32s.
    with engine.sequence() as s:
        first = engine.generate(_rows([40], seed), 8, sequences=[s])[0]
        second = engine.generate(_rows([90], seed + 1), GEN, sequences=[s], prefill_chunk=32)[0]
        _check_against_hf(model, first + second, GEN, MARGIN_TOL[dtype], f"[{dtype}] chunked continuation")
    assert s not in engine.open_sequences()


@gpu
def test_history_survives_pool_growth_and_other_calls(hf_and_engine):
    """A sequence stays valid while other calls grow the KV pool (its pages are copied to the new
    pool) and while plain generate/logits calls use and free pages of the same pool."""
    model, engine, dtype, seed = hf_and_engine
    with engine.sequence() as s:
        history = engine.generate(_rows([100], seed), GEN, sequences=[s])[0]
        engine.generate(_rows([900] * 6, seed + 1), 8)  # 6 x 57 pages: more than the pool had
        engine.logits(_rows([50, 3], seed + 2))
        history += engine.generate(_rows([20], seed + 3), GEN, sequences=[s])[0]
        assert engine.sequence_length(s) == len(history)
        _check_against_hf(model, history, GEN, MARGIN_TOL[dtype], f"[{dtype}] after pool growth")


@gpu
def test_history_ends_at_eos(hf_and_engine):
    model, engine, dtype, seed = hf_and_engine
    prompt = _rows([12], seed)[0]
    free_run = engine.generate([prompt], 16)[0][12:]
    # EOS: a token greedy produces at step k >= 2 for the first time (step 0 if there is none).
    k = next((i for i in range(2, 16) if free_run[i] not in free_run[:i]), 0)
    eos = free_run[k]
    with engine.sequence() as s:
        new = engine.generate([prompt], 16, eos_token_id=eos, sequences=[s])[0][12:]
        stop = new.index(eos)
        assert all(t == eos for t in new[stop:])
        assert engine.sequence_length(s) == 12 + stop + 1  # through the first EOS, not its padding
        more = _rows([5], seed + 1)[0]
        history = prompt + new[:stop + 1] + engine.generate([more], GEN, sequences=[s])[0]
        _check_against_hf(model, history, GEN, MARGIN_TOL[dtype], f"[{dtype}] after EOS")


@gpu
def test_multi_turn_bad_inputs_raise_and_keep_the_history(hf_and_engine):
    _, engine, _, _ = hf_and_engine
    with pytest.raises(ValueError, match="sequence"):
        engine.close_sequence(10**9)
    s = engine.open_sequence()
    try:
        with pytest.raises(ValueError, match="new_tokens"):
            engine.generate([[]], 4, sequences=[s])  # no history and nothing new
        engine.generate([[1] * 1000], 4, sequences=[s])
        length = engine.sequence_length(s)
        assert length == 1004
        with pytest.raises(ValueError, match="n_positions"):
            engine.generate([[2] * 10], 11, sequences=[s])  # 1004 + 10 + 11 > 1024
        with pytest.raises(ValueError, match="appears twice"):
            engine.generate([[1], [2]], 4, sequences=[s, s])
        with pytest.raises(ValueError, match="sequences"):
            engine.generate([[1], [2]], 4, sequences=[s])
        with pytest.raises(ValueError, match="vocab_size"):
            engine.generate([[50257]], 4, sequences=[s])
        with pytest.raises(ValueError, match="prefill_chunk"):
            engine.generate([[1]], 4, prefill_chunk=0)
        with pytest.raises(ValueError, match="kv_dtype"):
            engine._cpp.set_kv_dtype("float8_e4m3fn")  # the cached history is in the engine's dtype
        assert engine.sequence_length(s) == length
        engine.generate([[3] * 10], 10, sequences=[s])  # exactly 1024 positions
        assert engine.sequence_length(s) == 1024
    finally:
        engine.close_sequence(s)
    with pytest.raises(ValueError, match="sequence"):
        engine.sequence_length(s)


# ---------------------------------------------------------------- CPU: the Python wrapper's own logic
class _StubCpp:
    """Records the calls the wrapper makes instead of running an engine."""

    def __init__(self):
        self.closed = []
        self.calls = []

    def open_sequence(self):
        return 7

    def close_sequence(self, seq):
        self.closed.append(seq)

    def generate_continue(self, ids, rows, *args):
        self.calls.append((ids, rows, args))
        return torch.zeros((len(rows), args[0]), dtype=torch.long), (0.0, 0.0, 0, 0, 0)


def _stub_engine() -> GPT2Engine:
    engine = GPT2Engine.__new__(GPT2Engine)
    engine._cpp = _StubCpp()
    engine.config = {"n_positions": 1024}
    return engine


def test_sequence_context_closes_also_after_an_error():
    engine = _stub_engine()
    with pytest.raises(RuntimeError, match="boom"):
        with engine.sequence() as s:
            assert s == 7
            raise RuntimeError("boom")
    assert engine._cpp.closed == [7]


def test_wrapper_checks_sequences_and_prefill_chunk():
    engine = _stub_engine()
    with pytest.raises(ValueError, match="prefill_chunk"):
        engine.generate([[1]], 4, sequences=[7], prefill_chunk=0)
    with pytest.raises(TypeError, match="sequences"):
        engine.generate([[1]], 4, sequences=["7"])
    with pytest.raises(ValueError, match="sequences"):
        engine.generate([[1], [2]], 4, sequences=[7])
    out = engine.generate([[]], 3, sequences=7, prefill_chunk=5000)  # an empty row continues; chunk capped
    assert out == [[0, 0, 0]]
    ids, rows, args = engine._cpp.calls[-1]
    assert ids == [7] and rows == [[]] and args[0] == 3 and args[-1] == 1024
