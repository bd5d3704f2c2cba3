"""flash_attention (CUDA op) and its Triton twin against an fp32 reference, with the tolerance
rule: max abs error at most 2x that of PyTorch's own fp16/bf16 attention math, plus 1e-5."""
import functools
import math

import pytest
import torch

import flashkernel
import flashkernel.triton
from flashkernel.triton import attention as triton_attention_module
from helpers import TRITON_INTERPRET, assert_within_torch_error, gpu, randn, triton_device, triton_twin

DTYPES = [torch.float16, torch.bfloat16]


def reference(q, k, v, causal=False, scale=None, dtype=torch.float32):
    """softmax(scale q k^T) v materialized. dtype=float32 (float64 on CPU): the accurate reference;
    dtype=q.dtype: PyTorch's low-precision math (scores and P@V in fp16/bf16, softmax in fp32, P
    rounded to the input dtype), whose error sets the tolerance. Returns (out, lse)."""
    if q.device.type == "cpu" and dtype == torch.float32:
        dtype = torch.float64
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    group = q.shape[1] // k.shape[1]
    qq, kk, vv = q.to(dtype), k.to(dtype).repeat_interleave(group, 1), v.to(dtype).repeat_interleave(group, 1)
    s = (qq @ kk.transpose(-1, -2)).float() * scale
    if causal:
        nq, nk = q.shape[2], k.shape[2]
        i = torch.arange(nq, device=q.device)[:, None]
        j = torch.arange(nk, device=q.device)[None, :]
        s = s.masked_fill(j > i + nk - nq, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None].clamp_min(torch.finfo(s.dtype).min))
    p = torch.nan_to_num(p, nan=0.0)  # rows that see no key: p = 0, out = 0
    out = p.to(dtype) @ vv
    return out, lse


def make_qkv(b, hq, hkv, nq, nk, d, dtype, device="cuda", scale=1.0, bnhd=False):
    if bnhd:  # stored [B, N, H, d], viewed as [B, H, N, d] without a copy
        q = randn((b, nq, hq, d), dtype, device, scale).transpose(1, 2)
        k = randn((b, nk, hkv, d), dtype, device, scale).transpose(1, 2)
        v = randn((b, nk, hkv, d), dtype, device).transpose(1, 2)
        return q, k, v
    return (randn((b, hq, nq, d), dtype, device, scale), randn((b, hkv, nk, d), dtype, device, scale),
            randn((b, hkv, nk, d), dtype, device))


def check(fn, q, k, v, causal=False, scale=None, what=""):
    out, lse = fn(q, k, v, causal=causal, scale=scale, return_lse=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    ref, ref_lse = reference(q, k, v, causal, scale)
    lowp, _ = reference(q, k, v, causal, scale, dtype=q.dtype)
    assert_within_torch_error(out, ref, lowp, what=what)
    # LSE: rows that see no key are -inf in both; elsewhere fp32 statistics.
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse)), f"{what}: -inf rows differ"
    finite = torch.isfinite(ref_lse)
    if finite.any():
        err = (lse[finite].double() - ref_lse[finite].double()).abs().max().item()
        assert err <= 1e-4 * max(1.0, ref_lse[finite].abs().max().item()), f"{what}: lse error {err:.3e}"
    return out, lse


def _cuda_backends():
    """The CUDA kernel paths this GPU has: the portable one always, the Hopper one on sm_90."""
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9:
        return ["sm80", "sm90"]
    return ["sm80"]


@pytest.fixture(params=_cuda_backends())
def cuda_attention(request):
    """flashkernel.flash_attention pinned to one kernel path: every CUDA test runs on each."""
    return functools.partial(flashkernel.flash_attention, backend=request.param)


triton_attention = flashkernel.triton.flash_attention

# ------------------------------------------------------------------ CUDA op
SEED_MATRIX = [(1, 8, 512, 64), (4, 8, 1024, 64), (1, 8, 4096, 64), (8, 12, 2048, 128)]


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("b,h,n,d", SEED_MATRIX)
def test_cuda_seed_matrix(b, h, n, d, causal, dtype, cuda_attention):
    q, k, v = make_qkv(b, h, h, n, n, d, dtype)
    check(cuda_attention, q, k, v, causal, what=f"B={b} H={h} N={n} d={d} causal={causal}")


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("n", [1, 17, 127, 129, 1000])
def test_cuda_odd_lengths(n, d, causal, dtype, cuda_attention):
    q, k, v = make_qkv(2, 3, 3, n, n, d, dtype)
    check(cuda_attention, q, k, v, causal, what=f"N={n} d={d}")


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("nq,nk", [(100, 300), (300, 100), (1, 513), (513, 1), (129, 1000)])
def test_cuda_unequal_lengths(nq, nk, causal, dtype, cuda_attention):
    q, k, v = make_qkv(2, 4, 2, nq, nk, 128, dtype)
    out, lse = check(cuda_attention, q, k, v, causal, what=f"Nq={nq} Nk={nk}")
    if causal and nq > nk:  # rows i < nq - nk see no key
        blind = nq - nk
        assert torch.count_nonzero(out[:, :, :blind]) == 0
        assert torch.isneginf(lse[:, :, :blind]).all()


@gpu
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("nq,nk", [(640, 640), (600, 700), (700, 600)])
def test_cuda_causal_many_tiles_odd_block_count(nq, nk, d, cuda_attention):
    # 5 or 6 query blocks of 128 per (batch, head) and more work than SMs: the Hopper kernel's
    # persistent causal schedule pairs query blocks i and n-1-i, leaves an odd middle block on its
    # own, and carries its K/V ring across many work tiles per block.
    q, k, v = make_qkv(4, 24, 8, nq, nk, d, torch.bfloat16)
    check(cuda_attention, q, k, v, True, what=f"causal Nq={nq} Nk={nk} d={d}")


@gpu
@pytest.mark.parametrize("ratio", [1, 4, 8])
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_gqa(ratio, causal, cuda_attention):
    q, k, v = make_qkv(2, 8, 8 // ratio, 333, 333, 64, torch.bfloat16)
    check(cuda_attention, q, k, v, causal, what=f"GQA {ratio}")


@gpu
@pytest.mark.parametrize("d", [64, 128])
def test_cuda_transposed_layout_and_misaligned_views(d, cuda_attention):
    q, k, v = make_qkv(2, 4, 2, 200, 250, d, torch.float16, bnhd=True)
    assert not q.is_contiguous()
    check(cuda_attention, q, k, v, True, what="[B,N,H,d].transpose(1,2)")
    # A storage offset of one element breaks 16-byte alignment: the op must still be right.
    flat = randn(2 * 4 * 200 * d + 1, torch.float16)
    q2 = flat[1:].view(2, 4, 200, d)
    check(cuda_attention, q2, k, v, False, what="misaligned q")


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_large_magnitude_scores(dtype, causal, cuda_attention):
    # q, k ~ N(0, 45^2): scaled scores have a standard deviation of ~2e3 and reach ~1e4.
    q, k, v = make_qkv(1, 4, 4, 300, 300, 64, dtype, scale=45.0)
    s = (q.float() @ k.float().transpose(-1, -2)) / 8
    assert s.abs().max() > 5e3
    out, _ = check(cuda_attention, q, k, v, causal, what="large scores")
    assert torch.isfinite(out).all()


@gpu
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_custom_scale_and_default_return(d, dtype, cuda_attention):
    q, k, v = make_qkv(1, 2, 2, 77, 77, d, dtype)
    check(cuda_attention, q, k, v, False, scale=0.3, what="scale=0.3")
    check(cuda_attention, q, k, v, True, scale=-0.05, what="negative scale")
    check(cuda_attention, q, k, v, False, scale=0.0, what="zero scale")
    out = cuda_attention(q, k, v)
    assert isinstance(out, torch.Tensor) and out.shape == q.shape
    # A negative scale over several key tiles, so the running max moves and O is rescaled (the
    # Hopper kernel negates S inside the wgmma and runs the softmax with |scale|).
    q, k, v = make_qkv(1, 2, 1, 130, 333, d, dtype)
    for causal in (False, True):
        check(cuda_attention, q, k, v, causal, scale=-0.4, what=f"negative scale, 3 key tiles, causal={causal}")


@gpu
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_deterministic(causal, cuda_attention):
    q, k, v = make_qkv(2, 8, 2, 1000, 1000, 128, torch.bfloat16)
    a, la = cuda_attention(q, k, v, causal=causal, return_lse=True)
    b, lb = cuda_attention(q, k, v, causal=causal, return_lse=True)
    assert torch.equal(a, b) and torch.equal(la, lb)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_cuda_matches_triton(dtype, causal, cuda_attention):
    q, k, v = make_qkv(2, 8, 4, 700, 900, 128, dtype)
    a, la = cuda_attention(q, k, v, causal=causal, return_lse=True)
    b, lb = triton_attention(q, k, v, causal=causal, return_lse=True)
    ref, _ = reference(q, k, v, causal)
    lowp, _ = reference(q, k, v, causal, dtype=dtype)
    # Both meet the rule against the reference; against each other they differ by at most the sum.
    theirs = (lowp.double() - ref.double()).abs().max().item()
    assert (a.double() - b.double()).abs().max().item() <= 4 * theirs + 2e-5
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-4)


@gpu
def test_cuda_torch_compile_and_opcheck():
    q, k, v = make_qkv(1, 2, 1, 65, 65, 64, torch.float16)

    def f(q, k, v):
        return flashkernel.flash_attention(q, k, v, causal=True) * 2

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(q, k, v), f(q, k, v))
    torch.library.opcheck(torch.ops.flashkernel.flash_attention.default, (q, k, v, True, None, True))


def bad_inputs(device):
    """(kwargs, exception, message) for every input the op must reject."""
    def t(*shape, dtype=torch.float16):
        return torch.zeros(shape, dtype=dtype, device=device)

    good = dict(q=t(1, 4, 8, 64), k=t(1, 2, 8, 64), v=t(1, 2, 8, 64))
    return [
        (dict(q=t(1, 4, 8, 72), k=t(1, 2, 8, 72), v=t(1, 2, 8, 72)), ValueError, "head_dim 32, 64, 80, 96, 128 or 256"),
        (dict(q=t(1, 4, 8, 64, dtype=torch.float32), k=t(1, 2, 8, 64, dtype=torch.float32),
              v=t(1, 2, 8, 64, dtype=torch.float32)), TypeError, "unsupported dtype"),
        (dict(good, k=t(2, 2, 8, 64), v=t(2, 2, 8, 64)), ValueError, "batch size"),
        (dict(good, k=t(1, 2, 8, 128), v=t(1, 2, 8, 128)), ValueError, "head_dim of 'q'"),
        (dict(good, k=t(1, 3, 8, 64), v=t(1, 3, 8, 64)), ValueError, "multiple of the heads"),
        (dict(good, v=t(1, 2, 9, 64)), ValueError, "'k' and 'v' must have the same shape"),
        (dict(good, k=t(1, 2, 8, 64, dtype=torch.bfloat16)), TypeError, "same dtype"),
        (dict(good, q=t(1, 4, 64, 8).transpose(2, 3)), ValueError, "contiguous last dimension"),
        (dict(good, q=t(4, 8, 64)), ValueError, "4-D"),
    ]


@gpu
@pytest.mark.parametrize("case", range(len(bad_inputs("cpu"))))
def test_cuda_bad_inputs_name_the_argument(case, cuda_attention):
    kwargs, exc, msg = bad_inputs("cuda")[case]
    with pytest.raises(exc, match=msg):
        cuda_attention(**kwargs)


def test_cuda_cpu_tensor_names_argument(cuda_attention):
    q = torch.zeros(1, 1, 4, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="argument 'q' must be a CUDA tensor"):
        cuda_attention(q, q, q)


@gpu
def test_cuda_backend_argument():
    q, k, v = make_qkv(1, 2, 1, 65, 65, 64, torch.float16)
    with pytest.raises(ValueError, match="argument 'backend'"):
        flashkernel.flash_attention(q, k, v, backend="sm70")
    if "sm90" in _cuda_backends():
        # auto takes the Hopper path on sm_90: bit-identical to forcing it.
        assert torch.equal(flashkernel.flash_attention(q, k, v), flashkernel.flash_attention(q, k, v, backend="sm90"))
    else:
        with pytest.raises(ValueError, match="argument 'backend'"):
            flashkernel.flash_attention(q, k, v, backend="sm90")


# ------------------------------------------------------------------ Triton twin
# Under TRITON_INTERPRET=1 these run on the CPU, so shapes stay tiny there.
TWIN_LENGTHS = [1, 17, 40] if TRITON_INTERPRET else [1, 17, 127, 129, 1000]


@triton_twin
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", TWIN_LENGTHS)
def test_triton_odd_lengths(n, causal, dtype):
    q, k, v = make_qkv(1, 2, 2, n, n, 64, dtype, device=triton_device())
    check(triton_attention, q, k, v, causal, what=f"N={n}")


@triton_twin
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("nq,nk", [(5, 37), (37, 5)] if TRITON_INTERPRET else [(100, 300), (300, 100), (1, 513)])
def test_triton_unequal_lengths_gqa_head128(nq, nk, causal):
    q, k, v = make_qkv(1, 4, 2, nq, nk, 128, torch.bfloat16, device=triton_device())
    check(triton_attention, q, k, v, causal, what=f"Nq={nq} Nk={nk}")


@triton_twin
@pytest.mark.parametrize("ratio", [1, 4, 8])
def test_triton_gqa_transposed(ratio):
    n = 24 if TRITON_INTERPRET else 333
    q, k, v = make_qkv(1, 8, 8 // ratio, n, n, 64, torch.float16, device=triton_device(), bnhd=True)
    check(triton_attention, q, k, v, True, what=f"GQA {ratio}")


@triton_twin
def test_triton_large_magnitude_scores():
    n = 20 if TRITON_INTERPRET else 300
    q, k, v = make_qkv(1, 2, 2, n, n, 64, torch.float16, device=triton_device(), scale=45.0)
    out, _ = check(triton_attention, q, k, v, True, what="large scores")
    assert torch.isfinite(out).all()


@gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("b,h,n,d", [(4, 8, 1024, 64), (8, 12, 2048, 128)])
def test_triton_seed_matrix(b, h, n, d, causal):
    q, k, v = make_qkv(b, h, h, n, n, d, torch.bfloat16)
    check(triton_attention, q, k, v, causal, what=f"B={b} H={h} N={n} d={d}")


@gpu
def test_triton_deterministic():
    q, k, v = make_qkv(2, 8, 2, 1000, 1000, 128, torch.float16)
    assert torch.equal(triton_attention(q, k, v, causal=True), triton_attention(q, k, v, causal=True))


@triton_twin
@pytest.mark.parametrize("case", range(len(bad_inputs("cpu"))))
def test_triton_bad_inputs_name_the_argument(case):
    kwargs, exc, msg = bad_inputs(triton_device())[case]
    with pytest.raises(exc, match=msg):
        triton_attention(**kwargs)


# The suite runs the twin with one fixed configuration per head_dim (FLASHKERNEL_TRITON_AUTOTUNE=0,
# set by conftest.py); this runs every configuration the autotuner may pick: partial query and key
# tiles (Nq, Nk = 127, 129 and 129, 127, where causal rows see no key), causal and not, GQA.
@triton_twin
@pytest.mark.parametrize("d,dtype", [(64, torch.float16), (128, torch.bfloat16)])
@pytest.mark.parametrize("config", range(len(triton_attention_module.CONFIGS)),
                         ids=lambda i: "{BLOCK_M}x{BLOCK_N}".format(**triton_attention_module.CONFIGS[i].kwargs)
                         + f"-w{triton_attention_module.CONFIGS[i].num_warps}"
                         + f"-s{triton_attention_module.CONFIGS[i].num_stages}")
def test_triton_every_config(config, d, dtype):
    cfg = triton_attention_module.CONFIGS[config]

    def run(q, k, v, causal=False, scale=None, return_lse=False):
        return triton_attention_module.flash_attention_with_config(q, k, v, cfg, causal=causal, scale=scale,
                                                                   return_lse=return_lse)

    for nq, nk in [(5, 7), (7, 5)] if TRITON_INTERPRET else [(127, 129), (129, 127)]:
        q, k, v = make_qkv(2, 4, 2, nq, nk, d, dtype, device=triton_device())
        for causal in (False, True):
            check(run, q, k, v, causal, what=f"config {cfg} Nq={nq} Nk={nk} causal={causal}")


# With autotuning on (as in `flashkernel bench`), the first call of a tuning key goes through
# Triton's autotuner and later calls launch the chosen configuration directly (TunedLauncher): both
# must give the reference's answer, and the same bits (the same configuration ran).
@gpu
def test_triton_autotuned_launches(monkeypatch):
    monkeypatch.setenv("FLASHKERNEL_TRITON_AUTOTUNE", "1")
    q, k, v = make_qkv(1, 4, 2, 333, 333, 64, torch.float16)
    first, _ = check(triton_attention, q, k, v, True, what="autotuned, first call")
    again, _ = check(triton_attention, q, k, v, True, what="autotuned, chosen configuration")
    assert torch.equal(first, again)
