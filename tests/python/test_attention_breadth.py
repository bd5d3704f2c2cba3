"""Attention breadth (issue 21): head dims 32-256, sliding windows, soft-capping and packed
(varlen) batches, for the CUDA ops (flashkernel.flash_attention / flash_attention_varlen, marked
`gpu`) and their Triton twins (marked `triton`, also run on the CPU under TRITON_INTERPRET=1 with
small shapes), against the float64 reference of attention_reference.py.

Tolerance (the rule of test_attention.py): max abs error against the float64 reference at most 2x
that of PyTorch's own fp16/bf16 attention math against it, plus 1e-5; LSE within 1e-4 (relative
to its magnitude) and -inf exactly on the rows that see no key.
"""
import math

import pytest
import torch

import flashkernel
import flashkernel.triton
from attention_reference import (make_varlen_batch, reference_attention, reference_attention_varlen,
                                 visible_keys)
from flashkernel.triton import attention as triton_attention_module
from flashkernel.triton._autotune import autotune_enabled
from helpers import TRITON_INTERPRET, assert_within_torch_error, gpu, randn, triton_device, triton_twin

DTYPES = [torch.float16, torch.bfloat16]
HEAD_DIMS = [32, 64, 80, 96, 128, 256]
# Every test runs on the Triton twin (CPU under the interpreter, else the GPU) and on the CUDA op.
IMPLS = [pytest.param("triton", marks=triton_twin), pytest.param("cuda", marks=gpu)]


def tiny(impl):
    """True where the test runs on the CPU interpreter: shapes stay small there."""
    return impl == "triton" and TRITON_INTERPRET


def device_of(impl):
    return triton_device() if impl == "triton" else "cuda"


def dense_op(impl):
    return flashkernel.triton.flash_attention if impl == "triton" else flashkernel.flash_attention


def varlen_op(impl):
    return flashkernel.triton.flash_attention_varlen if impl == "triton" else flashkernel.flash_attention_varlen


def poison_allocator(device, *shapes):
    """The ops allocate their outputs, so they cannot be NaN-filled beforehand; instead, blocks of
    the outputs' sizes are filled with NaN and freed, and the caching allocator hands them back to
    the op: an element the kernel forgets to write stays NaN and fails the check."""
    if torch.device(device).type == "cuda":
        blocks = [torch.full(shape, float("nan"), dtype=torch.float32, device=device) for shape in shapes]
        del blocks


def make_qkv(b, hq, hkv, nq, nk, d, dtype, device, scale=1.0, bnhd=False):
    if bnhd:  # stored [B, N, H, d], viewed as [B, H, N, d] without a copy
        return (randn((b, nq, hq, d), dtype, device, scale).transpose(1, 2),
                randn((b, nk, hkv, d), dtype, device, scale).transpose(1, 2),
                randn((b, nk, hkv, d), dtype, device).transpose(1, 2))
    return (randn((b, hq, nq, d), dtype, device, scale), randn((b, hkv, nk, d), dtype, device, scale),
            randn((b, hkv, nk, d), dtype, device))


def check_lse(lse, ref_lse, what):
    assert lse.dtype == torch.float32 and lse.shape == ref_lse.shape, f"{what}: lse {lse.dtype} {tuple(lse.shape)}"
    assert not torch.isnan(lse).any(), f"{what}: lse has NaN"
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse)), f"{what}: the -inf rows of lse differ"
    finite = torch.isfinite(ref_lse)
    if finite.any():
        err = (lse[finite].double() - ref_lse[finite].double()).abs().max().item()
        assert err <= 1e-4 * max(1.0, ref_lse[finite].abs().max().item()), f"{what}: lse error {err:.3e}"


def check_dense(impl, q, k, v, what="", backend=None, **kwargs):
    """Runs the op with return_lse and checks out and lse against the reference; kwargs: causal,
    scale, window, softcap. backend (CUDA only): the kernel path to force."""
    poison_allocator(q.device, q.shape, q.shape[:3])
    op_args = dict(kwargs, backend=backend) if backend is not None else kwargs
    out, lse = dense_op(impl)(q, k, v, return_lse=True, **op_args)
    what = f"{impl} {what} backend={backend} {kwargs} q{tuple(q.shape)} k{tuple(k.shape)} {q.dtype}"
    assert out.shape == q.shape and out.dtype == q.dtype, what
    ref, ref_lse = reference_attention(q, k, v, **kwargs)
    lowp, _ = reference_attention(q, k, v, dtype=q.dtype, **kwargs)
    assert_within_torch_error(out, ref, lowp, what=what)
    check_lse(lse, ref_lse, what)
    return out, lse


def check_varlen(impl, batch, what="", backend=None, **kwargs):
    """batch: make_varlen_batch's tuple. Checks out [total_q, Hq, d] and lse [Hq, total_q].
    backend (CUDA only): the kernel path to force."""
    q, k, v, cu_q, cu_k, max_q, max_k = batch
    poison_allocator(q.device, q.shape, (q.shape[1], q.shape[0]))
    op_args = dict(kwargs, backend=backend) if backend is not None else kwargs
    out, lse = varlen_op(impl)(q, k, v, cu_q, cu_k, max_q, max_k, return_lse=True, **op_args)
    what = f"{impl} {what} {kwargs} seqlens_q={cu_q.diff().tolist()} seqlens_k={cu_k.diff().tolist()} " \
           f"d={q.shape[-1]} {q.dtype}"
    assert out.shape == q.shape and out.dtype == q.dtype, what
    ref, ref_lse = reference_attention_varlen(q, k, v, cu_q, cu_k, **kwargs)
    lowp, _ = reference_attention_varlen(q, k, v, cu_q, cu_k, dtype=q.dtype, **kwargs)
    assert_within_torch_error(out, ref, lowp, what=what)
    check_lse(lse, ref_lse, what)
    return out, lse


# ------------------------------------------------------------------ the reference itself
def test_reference_masks_follow_flash_attention():
    # Bottom-right alignment: with Nq=2, Nk=4, row 0 sits at key 2, row 1 at key 3.
    assert visible_keys(2, 4, causal=True).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert visible_keys(2, 4, window=(1, 0)).tolist() == [[False, True, True, False], [False, False, True, True]]
    assert visible_keys(2, 4, window=(-1, 1)).tolist() == [[True, True, True, True], [True, True, True, True]]
    assert visible_keys(2, 4, causal=True, window=(0, 5)).tolist() == [[False, False, True, False],
                                                                       [False, False, False, True]]
    # Nq > Nk: the first rows sit before key 0 and see nothing under the causal mask.
    assert visible_keys(3, 1, causal=True).tolist() == [[False], [False], [True]]


def test_reference_blind_rows_and_softcap():
    q = torch.randn(1, 2, 5, 32, dtype=torch.float64)
    k = torch.randn(1, 1, 3, 32, dtype=torch.float64)
    v = torch.randn(1, 1, 3, 32, dtype=torch.float64)
    out, lse = reference_attention(q, k, v, causal=True)
    assert torch.isneginf(lse[:, :, :2]).all() and (out[:, :, :2] == 0).all()
    assert torch.isfinite(lse[:, :, 2:]).all()
    # softcap: c * tanh(s / c) of the scaled scores, then the softmax.
    s = (q @ k.transpose(-1, -2)) * 0.3
    s = 2.0 * torch.tanh(s / 2.0)
    expected = torch.softmax(s, -1) @ v
    out, lse = reference_attention(q, k, v, scale=0.3, softcap=2.0)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(lse, torch.logsumexp(s, -1))


def test_reference_varlen_is_the_dense_reference_per_sequence():
    q, k, v, cu_q, cu_k, max_q, max_k = make_varlen_batch([0, 1, 7, 20], [4, 0, 7, 9], heads_q=4, heads_kv=2,
                                                          head_dim=32, dtype=torch.float16, device="cpu")
    assert cu_q.dtype == torch.int32 and cu_q.tolist() == [0, 0, 1, 8, 28] and (max_q, max_k) == (20, 9)
    out, lse = reference_attention_varlen(q, k, v, cu_q, cu_k, causal=True)
    assert out.shape == q.shape and lse.shape == (4, 28)
    assert (out[0] == 0).all() and torch.isneginf(lse[:, 0]).all()  # the sequence with no key
    assert cu_k.tolist() == [0, 4, 4, 11, 20]
    o, l = reference_attention(q[8:28].transpose(0, 1)[None], k[11:20].transpose(0, 1)[None],
                               v[11:20].transpose(0, 1)[None], causal=True)
    assert torch.equal(out[8:28], o[0].transpose(0, 1)) and torch.equal(lse[:, 8:28], l[0])


# ------------------------------------------------------------------ dense: head dims
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", HEAD_DIMS)
def test_head_dims(d, causal, dtype, impl):
    shapes = [(19, 19), (9, 30), (30, 9)] if tiny(impl) else [(127, 127), (200, 333), (333, 200), (1000, 1000)]
    for nq, nk in shapes:
        q, k, v = make_qkv(2, 4, 2, nq, nk, d, dtype, device_of(impl))
        check_dense(impl, q, k, v, causal=causal)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", [dict(), dict(causal=True), dict(window=(256, 0)),
                                     dict(causal=True, softcap=30.0), dict(window=(100, 100), softcap=10.0)])
def test_cuda_large_head_dim_256(variant, dtype):
    q, k, v = make_qkv(3, 4, 2, 1000, 1000, 256, dtype, "cuda")
    check_dense("cuda", q, k, v, **variant)


# ------------------------------------------------------------------ dense: sliding windows
WINDOWS = [(4, -1), (-1, 3), (5, 2), (0, -1), (0, 0), (-1, 0), (33, 17), (10**6, 10**6), (10**6, -1)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", WINDOWS, ids=str)
def test_windows(window, causal, dtype, impl):
    shapes = [(40, 40), (23, 57), (57, 23)] if tiny(impl) else [(300, 300), (200, 700), (700, 200), (1000, 1000)]
    d = 64 if dtype == torch.float16 else 96
    for nq, nk in shapes:
        q, k, v = make_qkv(1, 2, 1, nq, nk, d, dtype, device_of(impl))
        out, lse = check_dense(impl, q, k, v, causal=causal, window=window)
        blind = ~visible_keys(nq, nk, causal=causal, window=window, device=q.device).any(-1)
        assert (out[:, :, blind] == 0).all() and torch.isneginf(lse[:, :, blind]).all()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [(128, 0), (255, 64), (1, 300), (513, -1)], ids=str)
def test_windows_spanning_many_tiles(window, causal, impl):
    # Windows of 1-8 key tiles at the GPU's block sizes: fully masked tiles on both sides are
    # skipped, the boundary tiles masked, the ones between run mask-free.
    n = 150 if tiny(impl) else 2000
    q, k, v = make_qkv(2, 4, 1, n, n + 37, 128, torch.bfloat16, device_of(impl))
    if tiny(impl):
        window = tuple(w if w < 0 else w // 8 for w in window)
    check_dense(impl, q, k, v, causal=causal, window=window)


@pytest.mark.parametrize("impl", IMPLS)
def test_no_window_spellings_agree(impl):
    q, k, v = make_qkv(1, 2, 2, 33, 45, 64, torch.float16, device_of(impl))
    op = dense_op(impl)
    plain = op(q, k, v, causal=True)
    assert torch.equal(plain, op(q, k, v, causal=True, window=(-1, -1)))
    assert torch.equal(plain, op(q, k, v, causal=True, softcap=0.0))
    if impl == "triton":  # causal sets right to 0: the same kernel runs (the CUDA op may pick another path)
        assert torch.equal(plain, op(q, k, v, causal=True, window=(-1, 5)))
    check_dense(impl, q, k, v, causal=True, window=(-1, 5))
    assert torch.equal(op(q, k, v), op(q, k, v, window=[-1, -1], softcap=None))


# ------------------------------------------------------------------ dense: soft-capping
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, (8, 3)], ids=str)
@pytest.mark.parametrize("softcap", [0.5, 5.0, 50.0])
def test_softcap(softcap, window, causal, impl):
    dtype = torch.bfloat16 if softcap == 5.0 else torch.float16
    shapes = [(29, 29), (13, 40)] if tiny(impl) else [(333, 333), (200, 900)]
    for nq, nk in shapes:
        q, k, v = make_qkv(2, 2, 1, nq, nk, 96, dtype, device_of(impl), scale=2.0)
        check_dense(impl, q, k, v, causal=causal, window=window, softcap=softcap)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp2:RuntimeWarning")  # the interpreter's numpy
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("scale", [None, -0.3])
def test_softcap_saturates_large_scores(scale, impl):
    # Scaled scores reach ~1e4: tanh saturates at +-1 and nothing overflows.
    n = 20 if tiny(impl) else 300
    q, k, v = make_qkv(1, 2, 2, n, n, 64, torch.float16, device_of(impl), scale=45.0)
    out, lse = check_dense(impl, q, k, v, causal=True, scale=scale, softcap=30.0)
    assert torch.isfinite(out).all() and (lse[torch.isfinite(lse)] <= 30.0 + math.log(n) + 1e-3).all()


# ------------------------------------------------------------------ dense: lengths, GQA, layouts, LSE
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", [1, 7, 127])
@pytest.mark.parametrize("variant", [dict(causal=True), dict(window=(16, -1)), dict(causal=True, softcap=10.0),
                                     dict(window=(3, 5), softcap=2.0)], ids=str)
def test_odd_lengths(variant, n, impl):
    q, k, v = make_qkv(1, 2, 1, n, n, 80, torch.bfloat16, device_of(impl))
    check_dense(impl, q, k, v, **variant)
    if not tiny(impl) or n < 100:  # Nq != Nk around the same length
        q, k, v = make_qkv(1, 2, 1, n, n + 5, 80, torch.bfloat16, device_of(impl))
        check_dense(impl, q, k, v, **variant)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ratio", [1, 4, 8])
def test_gqa_transposed_with_window_and_softcap(ratio, impl):
    n = 24 if tiny(impl) else 333
    q, k, v = make_qkv(1, 8, 8 // ratio, n, n + 9, 32, torch.float16, device_of(impl), bnhd=True)
    assert not q.is_contiguous()
    check_dense(impl, q, k, v, causal=True, window=(7, -1), softcap=8.0)
    check_dense(impl, q, k, v, window=(5, 5))


@pytest.mark.parametrize("impl", IMPLS)
def test_return_lse_false_returns_the_same_output(impl):
    q, k, v = make_qkv(1, 2, 1, 21, 21, 256, torch.bfloat16, device_of(impl))
    for kwargs in (dict(window=(4, 4)), dict(causal=True, softcap=3.0)):
        out = dense_op(impl)(q, k, v, **kwargs)
        assert isinstance(out, torch.Tensor)
        out2, _ = dense_op(impl)(q, k, v, return_lse=True, **kwargs)
        assert torch.equal(out, out2)


# The suite runs one fixed configuration per head_dim (FLASHKERNEL_TRITON_AUTOTUNE=0); this runs
# every configuration the autotuner may pick for each head dim with windows and soft-capping, on
# lengths that straddle its tiles.
@triton_twin
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("config", range(4), ids=lambda i: f"config{i}")
def test_triton_every_config_with_window_and_softcap(config, d):
    configs = triton_attention_module.configs_for_head_dim(d)
    if config >= len(configs):
        pytest.skip(f"head_dim {d} has {len(configs)} configurations")
    cfg = configs[config]

    def run(q, k, v, **kwargs):
        return triton_attention_module.flash_attention_with_config(q, k, v, cfg, **kwargs)

    n = 150 if TRITON_INTERPRET else 700
    q, k, v = make_qkv(1, 2, 1, n, n + 11, d, torch.float16, triton_device())
    for kwargs in (dict(window=(40, 20), softcap=5.0), dict(causal=True, window=(70, -1)), dict(causal=True)):
        out, lse = run(q, k, v, return_lse=True, **kwargs)
        what = f"config {cfg} d={d} {kwargs}"
        ref, ref_lse = reference_attention(q, k, v, **kwargs)
        lowp, _ = reference_attention(q, k, v, dtype=q.dtype, **kwargs)
        assert_within_torch_error(out, ref, lowp, what=what)
        check_lse(lse, ref_lse, what)
    batch = make_varlen_batch([0, 1, 70, 150], [3, 0, 90, 149], heads_q=2, heads_kv=1, head_dim=d,
                              device=triton_device())
    out, lse = triton_attention_module.flash_attention_varlen_with_config(*batch, cfg, causal=True, window=(30, -1),
                                                                          return_lse=True)
    ref, ref_lse = reference_attention_varlen(*batch[:5], causal=True, window=(30, -1))
    lowp, _ = reference_attention_varlen(*batch[:5], causal=True, window=(30, -1), dtype=torch.float16)
    assert_within_torch_error(out, ref, lowp, what=f"varlen config {cfg} d={d}")
    check_lse(lse, ref_lse, f"varlen config {cfg} d={d}")


# ------------------------------------------------------------------ varlen
def varlen_cases(impl):
    """(seqlens_q, seqlens_k) of ragged batches, with empty and single-token sequences."""
    if tiny(impl):
        return [([0, 1, 7, 16, 17, 33, 0, 45], None), ([1, 7, 0, 20, 5], [5, 3, 9, 0, 40]), ([37], None)]
    return [([1, 15, 16, 17, 1000, 4097, 0, 300], None), ([1, 7, 0, 200, 513, 1000], [5, 3, 9, 0, 1000, 129]),
            ([127], [4097])]


VARLEN_VARIANTS = [dict(), dict(causal=True), dict(window=(16, 4)), dict(causal=True, window=(32, -1), softcap=5.0),
                   dict(softcap=20.0)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("d", [64, 96, 256])
@pytest.mark.parametrize("variant", VARLEN_VARIANTS, ids=str)
@pytest.mark.parametrize("case", range(3))
def test_varlen(case, variant, d, impl):
    seqlens_q, seqlens_k = varlen_cases(impl)[case]
    dtype = torch.bfloat16 if d == 96 else torch.float16
    batch = make_varlen_batch(seqlens_q, seqlens_k, heads_q=4, heads_kv=2, head_dim=d, dtype=dtype,
                              device=device_of(impl))
    check_varlen(impl, batch, **variant)


@triton_twin
@pytest.mark.parametrize("variant", VARLEN_VARIANTS, ids=str)
def test_triton_varlen_matches_dense_per_sequence(variant):
    # One varlen launch computes each sequence exactly as a dense call on it (same tiles, same
    # order), so with the same configuration the bits agree.
    if autotune_enabled() and not TRITON_INTERPRET:
        pytest.skip("autotuning may pick different configurations for the two calls")
    seqlens_q, seqlens_k = [3, 0, 30, 17], [9, 4, 30, 0]
    q, k, v, cu_q, cu_k, max_q, max_k = make_varlen_batch(seqlens_q, seqlens_k, heads_q=4, heads_kv=1, head_dim=80,
                                                          dtype=torch.bfloat16, device=triton_device())
    out, lse = flashkernel.triton.flash_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, return_lse=True,
                                                         **variant)
    for b in range(len(seqlens_q)):
        qs, qe, ks, ke = cu_q[b].item(), cu_q[b + 1].item(), cu_k[b].item(), cu_k[b + 1].item()
        if qe == qs:
            continue

        def seq(t, s, e):
            return t[s:e].transpose(0, 1).unsqueeze(0)

        if ke == ks:  # the dense op takes no empty keys: every row sees nothing
            assert (out[qs:qe] == 0).all() and torch.isneginf(lse[:, qs:qe]).all()
            continue
        o, l = flashkernel.triton.flash_attention(seq(q, qs, qe), seq(k, ks, ke), seq(v, ks, ke), return_lse=True,
                                                  **variant)
        assert torch.equal(out[qs:qe], o[0].transpose(0, 1)), f"sequence {b}"
        assert torch.equal(lse[:, qs:qe], l[0]), f"sequence {b}"


@pytest.mark.parametrize("impl", IMPLS)
def test_varlen_strided_packed_qkv(impl):
    # q, k, v as views of one packed [total, 3, H, d] projection: row strides of 3 * H * d.
    seqlens = [5, 0, 23, 1] if tiny(impl) else [5, 0, 700, 1, 129]
    total, heads, d = sum(seqlens), 4, 64
    qkv = randn((total, 3, heads, d), torch.float16, device_of(impl))
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    assert not q.is_contiguous()
    cu = torch.tensor([0] + seqlens, dtype=torch.int64).cumsum(0).to(torch.int32).to(device_of(impl))
    check_varlen(impl, (q, k, v, cu, cu, max(seqlens), max(seqlens)), causal=True)
    check_varlen(impl, (q, k, v, cu, cu, max(seqlens), max(seqlens)), window=(3, 3), softcap=4.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_varlen_max_seqlen_above_the_longest(impl):
    # max_seqlen_* only bound the grid: larger values give the same answer.
    batch = make_varlen_batch([3, 20, 9], [7, 20, 0], heads_q=2, head_dim=32, device=device_of(impl))
    q, k, v, cu_q, cu_k, max_q, max_k = batch
    exact = varlen_op(impl)(q, k, v, cu_q, cu_k, max_q, max_k, causal=True)
    loose = varlen_op(impl)(q, k, v, cu_q, cu_k, max_q + 40, max_k + 100, causal=True)
    assert torch.equal(exact, loose)
    check_varlen(impl, (q, k, v, cu_q, cu_k, max_q + 40, max_k + 100), causal=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("seqlens", [[], [0], [0, 0, 0]], ids=str)
def test_varlen_empty(seqlens, impl):
    device = device_of(impl)
    q = torch.zeros(0, 4, 64, dtype=torch.float16, device=device)
    kv = torch.zeros(0, 2, 64, dtype=torch.float16, device=device)
    cu = torch.zeros(len(seqlens) + 1, dtype=torch.int32, device=device)
    out, lse = varlen_op(impl)(q, kv, kv, cu, cu, 0, 0, causal=True, return_lse=True)
    assert out.shape == (0, 4, 64) and lse.shape == (4, 0) and lse.dtype == torch.float32


@pytest.mark.parametrize("impl", IMPLS)
def test_varlen_queries_without_keys(impl):
    # Every sequence has queries and no keys: output 0, LSE -inf everywhere.
    device = device_of(impl)
    q = randn((9, 2, 64), torch.float16, device)
    kv = torch.zeros(0, 1, 64, dtype=torch.float16, device=device)
    cu_q = torch.tensor([0, 4, 9], dtype=torch.int32, device=device)
    cu_k = torch.zeros(3, dtype=torch.int32, device=device)
    poison_allocator(device, q.shape, (2, 9))
    out, lse = varlen_op(impl)(q, kv, kv, cu_q, cu_k, 5, 0, return_lse=True)
    assert (out == 0).all() and torch.isneginf(lse).all()


def _hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


@gpu
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("variant", [dict(), dict(causal=True), dict(causal=True, window=(100, -1), softcap=20.0),
                                     dict(window=(50, 30))], ids=str)
@pytest.mark.parametrize("backend", ["auto", "sm80", "sm90"])
@pytest.mark.parametrize("case", range(3))
def test_varlen_backends(case, backend, variant, d):
    # Each kernel path of the varlen op (sm90: the Hopper one at every head_dim, windows and
    # softcap included), on the ragged batches above plus NaN rows after the last sequence's
    # keys: a tail key tile reads them, and 0 * NaN must not reach the output. sm90 off Hopper is
    # an error naming backend.
    seqlens_q, seqlens_k = varlen_cases("cuda")[case]
    q, k, v, cu_q, cu_k, max_q, max_k = make_varlen_batch(seqlens_q, seqlens_k, heads_q=4, heads_kv=2, head_dim=d,
                                                          dtype=torch.bfloat16 if case == 1 else torch.float16)
    nan_rows = torch.full((70, 2, d), float("nan"), dtype=k.dtype, device=k.device)
    k, v = torch.cat([k, nan_rows]), torch.cat([v, nan_rows])
    if backend == "sm90" and not _hopper():
        with pytest.raises(ValueError, match="argument 'backend'"):
            flashkernel.flash_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, backend=backend)
        return
    check_varlen("cuda", (q, k, v, cu_q, cu_k, max_q, max_k), what=f"backend={backend}", backend=backend, **variant)


@gpu
def test_backend_argument_is_checked():
    # An unknown backend is an error naming it (the Hopper kernel now covers every head_dim, so
    # backend="sm90" is refused only off Hopper: test_varlen_backends).
    batch = make_varlen_batch([5, 9], heads_q=2, head_dim=64)
    with pytest.raises(ValueError, match="argument 'backend'"):
        flashkernel.flash_attention_varlen(*batch, backend="sm70")
    q, k, v = make_qkv(1, 2, 1, 16, 16, 96, torch.float16, "cuda")
    with pytest.raises(ValueError, match="argument 'backend'"):
        flashkernel.flash_attention(q, k, v, backend="sm70")


@gpu
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("variant", [dict(), dict(causal=True), dict(window=(4, -1)), dict(window=(-1, 3)), dict(causal=True, window=(200, -1)),
                                     dict(window=(0, 0)), dict(window=(333, 129), softcap=5.0),
                                     dict(causal=True, softcap=30.0, scale=-0.2), dict(softcap=0.5)], ids=str)
@pytest.mark.parametrize("backend", ["sm80", "sm90"])
def test_dense_window_softcap_backends(backend, variant, d):
    # The dense op's window and softcap on each kernel path (sm90: the Hopper kernel's extended
    # instance; at head_dims other than 64/128 also without them: the padded 32/80/96 and 256), Nq = Nk and both unequal (the window follows the bottom-right alignment; rows
    # with no visible key give 0 and lse -inf), GQA 4:1.
    if backend == "sm90" and not _hopper():
        pytest.skip("the Hopper kernel needs a compute capability 9.x GPU")
    for i, (nq, nk) in enumerate([(1000, 1000), (300, 777), (777, 300), (1, 129)]):
        q, k, v = make_qkv(2, 8, 2, nq, nk, d, torch.bfloat16 if i % 2 else torch.float16, "cuda")
        out, lse = check_dense("cuda", q, k, v, backend=backend, **variant)
        window = variant.get("window")
        blind = ~visible_keys(nq, nk, causal=variant.get("causal", False), window=window, device=q.device).any(-1)
        assert (out[:, :, blind] == 0).all() and torch.isneginf(lse[:, :, blind]).all()


# ------------------------------------------------------------------ CUDA op vs Triton twin
@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", [dict(causal=True, window=(128, -1)), dict(window=(64, 64), softcap=20.0)],
                         ids=str)
def test_cuda_matches_triton(variant, dtype):
    q, k, v = make_qkv(2, 8, 2, 700, 900, 96, dtype, "cuda")
    a, la = flashkernel.flash_attention(q, k, v, return_lse=True, **variant)
    b, lb = flashkernel.triton.flash_attention(q, k, v, return_lse=True, **variant)
    ref, _ = reference_attention(q, k, v, **variant)
    lowp, _ = reference_attention(q, k, v, dtype=dtype, **variant)
    theirs = (lowp.double() - ref.double()).abs().max().item()
    assert (a.double() - b.double()).abs().max().item() <= 4 * theirs + 2e-5
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-4)
    batch = make_varlen_batch([1, 300, 0, 77], [9, 300, 5, 0], heads_q=4, heads_kv=2, head_dim=96, dtype=dtype)
    a, la = flashkernel.flash_attention_varlen(*batch, return_lse=True, **variant)
    b, lb = flashkernel.triton.flash_attention_varlen(*batch, return_lse=True, **variant)
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-4)
    assert not torch.isnan(a).any() and (a.double() - b.double()).abs().max().item() <= 4 * theirs + 2e-5


@gpu
def test_cuda_varlen_deterministic():
    batch = make_varlen_batch([1, 500, 0, 1000], heads_q=8, heads_kv=2, head_dim=128, dtype=torch.bfloat16)
    a, la = flashkernel.flash_attention_varlen(*batch, causal=True, window=(200, -1), return_lse=True)
    b, lb = flashkernel.flash_attention_varlen(*batch, causal=True, window=(200, -1), return_lse=True)
    assert torch.equal(a, b) and torch.equal(la, lb)


@gpu
def test_cuda_opcheck_window_softcap_varlen():
    q, k, v = make_qkv(1, 2, 1, 65, 65, 96, torch.float16, "cuda")
    torch.library.opcheck(torch.ops.flashkernel.flash_attention.default,
                          (q, k, v, True, None, True, "auto", 16, 0, 5.0))
    q, k, v, cu_q, cu_k, max_q, max_k = make_varlen_batch([3, 0, 40], [5, 2, 40], heads_q=2, heads_kv=1,
                                                          head_dim=80)
    torch.library.opcheck(torch.ops.flashkernel.flash_attention_varlen.default,
                          (q, k, v, cu_q, cu_k, max_q, max_k, True, None, True, 8, -1, 0.0))


# ------------------------------------------------------------------ bad arguments
def bad_dense_arguments():
    """(kwargs, exception, message) for the new arguments of the dense op."""
    return [
        (dict(window=(1,)), ValueError, "argument 'window'"),
        (dict(window=(1, 2, 3)), ValueError, "argument 'window'"),
        (dict(window=(1.0, 2)), ValueError, "argument 'window'"),
        (dict(window=(True, 0)), ValueError, "argument 'window'"),
        (dict(window="left"), ValueError, "argument 'window'"),
        (dict(window=4), ValueError, "argument 'window'"),
        (dict(window=(-2, 0)), ValueError, "argument 'window' must be a pair of ints >= -1"),
        (dict(window=(16, -7)), ValueError, "argument 'window' must be a pair of ints >= -1"),
        (dict(softcap=-1.0), ValueError, "argument 'softcap'"),
        (dict(softcap=float("inf")), ValueError, "argument 'softcap'"),
        (dict(softcap=float("nan")), ValueError, "argument 'softcap'"),
    ]


def bad_varlen_arguments(device):
    """(args, kwargs, exception, message) for flash_attention_varlen."""
    def t(*shape, dtype=torch.float16):
        return torch.zeros(shape, dtype=dtype, device=device)

    def cu(*values, dtype=torch.int32):
        return torch.tensor(values, dtype=dtype, device=device)

    q, kv, c = t(8, 4, 64), t(8, 2, 64), cu(0, 3, 8)
    return [
        ((q, kv, kv, cu(0, 3, 8, dtype=torch.int64), c, 5, 5), {}, ValueError, "argument 'cu_seqlens_q'"),
        ((q, kv, kv, c, cu(0, 3, 8, dtype=torch.int64), 5, 5), {}, ValueError, "argument 'cu_seqlens_k'"),
        ((q, kv, kv, c.view(1, 3), c, 5, 5), {}, ValueError, "argument 'cu_seqlens_q'"),
        ((q, kv, kv, c, cu(0, 8), 5, 5), {}, ValueError, "'cu_seqlens_q' and 'cu_seqlens_k' must have the same length"),
        ((q, kv, kv, cu(), cu(), 5, 5), {}, ValueError, "batch \\+ 1 >= 1"),
        ((q, kv, kv, c, c, -1, 5), {}, ValueError, "argument 'max_seqlen_q'"),
        ((q, kv, kv, c, c, 5, -2), {}, ValueError, "argument 'max_seqlen_k'"),
        ((q[None], kv[None], kv[None], c, c, 5, 5), {}, ValueError, "3-D"),
        ((t(8, 4, 48), t(8, 2, 48), t(8, 2, 48), c, c, 5, 5), {}, ValueError, "head_dim 32, 64, 80, 96, 128 or 256"),
        ((q, t(8, 3, 64), t(8, 3, 64), c, c, 5, 5), {}, ValueError, "multiple of the heads"),
        ((q, kv, t(8, 2, 64, dtype=torch.bfloat16), c, c, 5, 5), {}, TypeError, "same dtype"),
        ((q, kv, kv, c, c, 5, 5), dict(window=(2, 2, 2)), ValueError, "argument 'window'"),
        ((q, kv, kv, c, c, 5, 5), dict(window=(-3, 0)), ValueError, "argument 'window'"),
        ((q, kv, kv, c, c, 5, 5), dict(softcap=-0.5), ValueError, "argument 'softcap'"),
    ]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", range(len(bad_dense_arguments())))
def test_bad_dense_arguments_name_the_argument(case, impl):
    kwargs, exc, msg = bad_dense_arguments()[case]
    q, k, v = make_qkv(1, 2, 1, 8, 8, 64, torch.float16, device_of(impl))
    with pytest.raises(exc, match=msg):
        dense_op(impl)(q, k, v, **kwargs)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", range(len(bad_varlen_arguments("cpu"))))
def test_bad_varlen_arguments_name_the_argument(case, impl):
    args, kwargs, exc, msg = bad_varlen_arguments(device_of(impl))[case]
    with pytest.raises(exc, match=msg):
        varlen_op(impl)(*args, **kwargs)


@triton_twin
def test_triton_varlen_cu_seqlens_on_another_device():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device besides the CPU")
    q, k, v, cu_q, cu_k, max_q, max_k = make_varlen_batch([3, 5], heads_q=2, head_dim=64, device=triton_device())
    other = "cpu" if q.is_cuda else "cuda"
    with pytest.raises(ValueError, match="same device"):
        flashkernel.triton.flash_attention_varlen(q, k, v, cu_q.to(other), cu_k, max_q, max_k)


def bad_varlen_values(device):
    """(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, message) for values the kernels
    would otherwise trust: q and k/v have 8 rows."""
    def cu(*values):
        return torch.tensor(values, dtype=torch.int32, device=device)

    return [
        (cu(0, 5, 3), cu(0, 3, 8), 5, 5, "argument 'cu_seqlens_q' must start at 0 and never decrease"),
        (cu(0, 3, 8), cu(0, 6, 2), 5, 6, "argument 'cu_seqlens_k' must start at 0 and never decrease"),
        (cu(1, 3, 8), cu(0, 3, 8), 5, 5, "argument 'cu_seqlens_q' must start at 0"),
        (cu(0, 3, 9), cu(0, 3, 8), 6, 5, "argument 'cu_seqlens_q' must end at most at q's 8 rows"),
        (cu(0, 3, 8), cu(0, 4, 12), 5, 8, "argument 'cu_seqlens_k' must end at most at k's 8 rows"),
        (cu(0, 3, 8), cu(0, 3, 8), 4, 5, "argument 'max_seqlen_q' must be at least the longest sequence, 5"),
        (cu(0, 3, 8), cu(0, 1, 8), 5, 6, "argument 'max_seqlen_k' must be at least the longest sequence, 7"),
    ]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", range(len(bad_varlen_values("cpu"))))
def test_bad_varlen_values_name_the_argument(case, impl):
    # cu_seqlens that decrease, do not start at 0 or run past their tensor, and a max_seqlen
    # shorter than a sequence: a clear error naming the argument, not a silently wrong result.
    device = device_of(impl)
    cu_q, cu_k, max_q, max_k, msg = bad_varlen_values(device)[case]
    q, kv = randn((8, 4, 64), torch.float16, device), randn((8, 2, 64), torch.float16, device)
    with pytest.raises(ValueError, match=msg):
        varlen_op(impl)(q, kv, kv, cu_q, cu_k, max_q, max_k)


@gpu
def test_varlen_values_are_trusted_under_graph_capture():
    # No device-to-host copy is allowed while a CUDA graph is captured: the values are not read
    # there, and a valid batch captures and replays to the eager result.
    q, k, v, cu_q, cu_k, max_q, max_k = make_varlen_batch([3, 17, 1], heads_q=4, heads_kv=2, head_dim=64)
    want = flashkernel.flash_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal=True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        flashkernel.flash_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal=True)  # warm-up
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = flashkernel.flash_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal=True)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(got, want)
