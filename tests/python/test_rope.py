"""RoPE (rope, rope_fused, rope_cache) through torch.ops.flashkernel and the Triton twins.

Reference: the angle convention of flashkernel.ops.rope (fp32 inv_freq computed in float64, fp32
angle = fp32(position) * inv_freq) with float64 sin/cos and float64 rotation. The bar: every
output within 1 ulp of the reference rounded to the output dtype, plus the error bound of the fp32
arithmetic itself (a few fp32 ulps of |a cos| + |b sin|, which only matters where the two terms
cancel). The neox path is also checked against HuggingFace's apply_rotary_pos_emb.
"""
import pytest
import torch

import flashkernel
import flashkernel.triton
from helpers import fresh_generator, gpu, poisoned, randn, triton_device, triton_twin

try:  # HuggingFace's own function when installed; CI installs transformers
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as hf_apply_rotary_pos_emb
    HAVE_HF = True
except ImportError:  # pragma: no cover - exercised only where transformers is absent
    HAVE_HF = False

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
STYLES = ["neox", "gptj"]
MAX_POS = 131072
# (batch, q heads, k heads, seq, head_dim, rotary_dim): odd sizes, GQA/MQA, partial rotary,
# head dims that are not a multiple of the 16-byte vector (scalar path).
SHAPES = [
    (1, 1, 1, 1, 64, 64),
    (2, 4, 2, 7, 128, 128),
    (3, 3, 1, 127, 64, 32),
    (1, 5, 5, 33, 80, 64),
    (2, 3, 2, 9, 30, 18),
    (1, 2, 1, 5, 6, 2),
]
TINY_SHAPES = [(1, 1, 1, 1, 8, 8), (2, 3, 1, 5, 12, 8), (1, 2, 2, 3, 6, 4)]


# ------------------------------------------------------------------ reference
def inv_freq(rotary_dim, base=10000.0):
    exps = torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim
    return (1.0 / (base ** exps)).to(torch.float32)


def angles(pos_bn, rotary_dim, base=10000.0):
    """fp32 angles [B, N, r/2]: one fp32 multiply, as the convention says."""
    return pos_bn.cpu().to(torch.float32)[..., None] * inv_freq(rotary_dim, base)


def positions_bn(positions, batch, seq):
    if positions is None:
        return torch.arange(seq).expand(batch, seq)
    positions = positions.cpu().long()
    return positions.expand(batch, seq) if positions.dim() == 1 else positions


def rotate(x, cos, sin, rotary_dim, style):
    """float64 rotation of x [B, H, N, d] with cos/sin [B, N, r/2]; returns (out, mag), mag being the
    sum of the magnitudes of the two products that make each output (|a c| + |b s| for a c - b s,
    |b c| + |a s| for b c + a s).
    Computed on x's device: each op rounds once in float64 there as on the CPU (the same values),
    and the large GPU shapes take no seconds of CPU time."""
    x = x.detach().double()
    c = cos.double().to(x.device)[:, None]
    s = sin.double().to(x.device)[:, None]
    half = rotary_dim // 2
    out = x.clone()
    mag = torch.zeros_like(x)
    if style == "neox":
        a, b = x[..., :half], x[..., half:rotary_dim]
        out[..., :half], out[..., half:rotary_dim] = a * c - b * s, b * c + a * s
        mag[..., :half], mag[..., half:rotary_dim] = a.abs() * c.abs() + b.abs() * s.abs(), b.abs() * c.abs() + a.abs() * s.abs()
    else:
        a, b = x[..., 0:rotary_dim:2], x[..., 1:rotary_dim:2]
        out[..., 0:rotary_dim:2], out[..., 1:rotary_dim:2] = a * c - b * s, b * c + a * s
        mag[..., 0:rotary_dim:2], mag[..., 1:rotary_dim:2] = a.abs() * c.abs() + b.abs() * s.abs(), b.abs() * c.abs() + a.abs() * s.abs()
    return out, mag


def reference(x, positions, rotary_dim, style, base=10000.0, table=None):
    """With table=None: float64 sin/cos of the fp32 angles; else the table's own values."""
    B, _, N, _ = x.shape
    pos = positions_bn(positions, B, N)
    if table is None:
        th = angles(pos, rotary_dim, base).double()
        cos, sin = th.cos(), th.sin()
    else:
        cos, sin = (t.detach()[pos.to(t.device)].double() for t in table)
    return rotate(x, cos, sin, rotary_dim, style)


def ulp(v, dtype):
    """One ulp of `dtype` at |v| (float64 tensor), subnormal spacing at the bottom."""
    fi = torch.finfo(dtype)
    _, e = torch.frexp(v.abs())
    return fi.eps * torch.maximum(torch.ldexp(torch.ones_like(v), e - 1), torch.full_like(v, fi.tiny))


def assert_rope_close(out, ref, mag, what, ulps=1):
    out64 = out.detach().double()
    ref, mag = ref.to(out64.device), mag.to(out64.device)
    assert not torch.isnan(out64).any(), f"{what}: output has NaN"
    ref_r = ref.to(out.dtype).double()
    tol = ulps * ulp(torch.maximum(ref_r.abs(), out64.abs()), out.dtype) + 4 * torch.finfo(torch.float32).eps * mag
    err = (out64 - ref_r).abs()
    bad = err > tol
    if bad.any():
        i = bad.nonzero()[0].tolist()
        raise AssertionError(f"{what}: {int(bad.sum())} elements beyond {ulps} ulp; first at {i}: got "
                             f"{out64[tuple(i)].item()!r}, want {ref_r[tuple(i)].item()!r}, tol {tol[tuple(i)].item():.3e}")


def make_qk(B, HQ, HK, N, D, dtype, device):
    return randn((B, HQ, N, D), dtype, device), randn((B, HK, N, D), dtype, device)


def make_positions(kind, B, N, device, max_pos=MAX_POS):
    g, _ = fresh_generator()
    if kind is None:
        return None
    if kind == "flat32":
        p = torch.randint(0, max_pos + 1, (N,), generator=g, dtype=torch.int32)
        p[0] = max_pos  # the largest position always occurs
    else:
        p = torch.randint(0, max_pos + 1, (B, N), generator=g, dtype=torch.int64)
        p[0, 0] = max_pos
    return p.to(device)


def table_rows(positions, N):
    return (int(positions.max()) + 1) if positions is not None else N


# ------------------------------------------------------------------ CUDA: values
@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pos_kind", [None, "flat32", "batch64"])
def test_rope_table_and_fused_match_reference(shape, style, dtype, pos_kind):
    B, HQ, HK, N, D, R = shape
    q, k = make_qk(B, HQ, HK, N, D, dtype, "cuda")
    positions = make_positions(pos_kind, B, N, "cuda")
    table = flashkernel.rope_cache(table_rows(positions, N), R, dtype=torch.float32)
    for x, out in zip((q, k), flashkernel.rope(q, k, *table, positions, style=style, rotary_dim=R)):
        ref, mag = reference(x, positions, R, style, table=table)
        assert_rope_close(out, ref, mag, f"rope {shape} {style} {dtype} {pos_kind}")
    for x, out in zip((q, k), flashkernel.rope_fused(q, k, positions, style=style, rotary_dim=R)):
        ref, mag = reference(x, positions, R, style)
        assert_rope_close(out, ref, mag, f"rope_fused {shape} {style} {dtype} {pos_kind}")


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rope_low_precision_table(dtype):
    B, HQ, HK, N, D, R = 2, 4, 2, 65, 128, 128
    q, k = make_qk(B, HQ, HK, N, D, dtype, "cuda")
    table = flashkernel.rope_cache(N, R, dtype=dtype)
    assert table[0].dtype == dtype
    for x, out in zip((q, k), flashkernel.rope(q, k, *table)):
        ref, mag = reference(x, None, R, "neox", table=table)
        assert_rope_close(out, ref, mag, f"{dtype} table")


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_rope_cache_matches_convention(dtype, base):
    P, R = MAX_POS + 1, 128
    cos, sin = flashkernel.rope_cache(P, R, base=base, dtype=dtype)
    assert cos.shape == sin.shape == (P, R // 2) and cos.dtype == dtype
    th = angles(torch.arange(P), R, base).double()
    # sincosf is within 2 fp32 ulps; then one rounding to dtype.
    ulps = 2 if dtype == torch.float32 else 1
    for got, want in ((cos, th.cos()), (sin, th.sin())):
        got64 = got.cpu().double()
        want_r = want.to(dtype).double()
        tol = ulps * ulp(torch.maximum(want_r.abs(), got64.abs()), dtype)
        assert ((got64 - want_r).abs() <= tol).all()


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("style", STYLES)
def test_rope_table_and_fused_agree(style, dtype):
    B, HQ, HK, N, D, R = 2, 8, 2, 300, 128, 64
    q, k = make_qk(B, HQ, HK, N, D, dtype, "cuda")
    positions = make_positions("batch64", B, N, "cuda")
    table = flashkernel.rope_cache(MAX_POS + 1, R)
    a = flashkernel.rope(q, k, *table, positions, style=style)
    b = flashkernel.rope_fused(q, k, positions, style=style, rotary_dim=R)
    for x, y in zip(a, b):
        y64 = y.cpu().double()
        assert (x.cpu().double() - y64).abs().le(2 * ulp(y64, dtype)).all()


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("style", STYLES)
def test_rope_matches_huggingface(style, dtype):
    """neox against HuggingFace's apply_rotary_pos_emb (or, without transformers, the same
    formula written out: q * cos + rotate_half(q) * sin); gptj against its direct formula."""
    B, HQ, HK, N, D, R = 2, 8, 4, 97, 128, 64
    q, k = make_qk(B, HQ, HK, N, D, dtype, "cuda")
    positions = make_positions("batch64", B, N, "cuda", max_pos=4095)
    cos, sin = flashkernel.rope_cache(4096, R)
    pos = positions.long()
    c, s = cos[pos], sin[pos]  # [B, N, r/2] fp32
    q32, k32 = q.float(), k.float()
    if style == "neox":
        c_hf, s_hf = torch.cat((c, c), -1), torch.cat((s, s), -1)  # HF's [B, N, r] layout
        apply = hf_apply_rotary_pos_emb if HAVE_HF else local_apply_rotary_pos_emb
        qr, kr = apply(q32[..., :R], k32[..., :R], c_hf, s_hf, unsqueeze_dim=1)
    else:
        qr, kr = gptj_formula(q32[..., :R], c, s), gptj_formula(k32[..., :R], c, s)
    want_q, want_k = torch.cat((qr, q32[..., R:]), -1), torch.cat((kr, k32[..., R:]), -1)
    got_q, got_k = flashkernel.rope(q, k, cos, sin, positions, style=style)
    for x, got, want in ((q, got_q, want_q), (k, got_k, want_k)):
        _, mag = reference(x, positions, R, style, table=(cos, sin))
        assert_rope_close(got, want.cpu().double(), mag, f"vs {'HF' if HAVE_HF else 'HF formula'} {style} {dtype}")


def local_rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def local_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return q * cos + local_rotate_half(q) * sin, k * cos + local_rotate_half(k) * sin


def gptj_formula(x, c, s):
    """(x[2i], x[2i+1]) -> (x[2i] cos - x[2i+1] sin, x[2i+1] cos + x[2i] sin), c/s [B, N, r/2]."""
    c, s = c[:, None], s[:, None]
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack((a * c - b * s, b * c + a * s), dim=-1).flatten(-2)


@gpu
@pytest.mark.parametrize("style", STYLES)
def test_rope_threads_walking_several_heads(style):
    """Only a problem that fills the GPU makes each thread walk several heads (fewer head groups
    than heads, with a partial last group): 4096 tokens x 64 heads of d=128."""
    B, HQ, HK, N, D, R = 2, 32, 32, 2048, 128, 128
    q, k = make_qk(B, HQ, HK, N, D, torch.bfloat16, "cuda")
    positions = make_positions("batch64", B, N, "cuda")
    table = flashkernel.rope_cache(MAX_POS + 1, R)
    for x, out in zip((q, k), flashkernel.rope(q, k, *table, positions, style=style)):
        ref, mag = reference(x, positions, R, style, table=table)
        assert_rope_close(out, ref, mag, f"large rope {style}")


# ------------------------------------------------------------------ CUDA: layouts and modes
@gpu
@pytest.mark.parametrize("variant", ["table", "fused"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("style", STYLES)
def test_rope_inplace_equals_out_of_place(variant, dtype, style):
    B, HQ, HK, N, D, R = 2, 6, 2, 37, 128, 96
    q, k = make_qk(B, HQ, HK, N, D, dtype, "cuda")
    positions = make_positions("flat32", B, N, "cuda", max_pos=1000)
    table = flashkernel.rope_cache(1001, R)
    if variant == "table":
        fn = lambda a, b, **kw: flashkernel.rope(a, b, *table, positions, style=style, **kw)  # noqa: E731
    else:
        fn = lambda a, b, **kw: flashkernel.rope_fused(a, b, positions, style=style, rotary_dim=R, **kw)  # noqa: E731
    want_q, want_k = fn(q, k)
    q2, k2 = q.clone(), k.clone()
    got_q, got_k = fn(q2, k2, inplace=True)
    assert got_q.data_ptr() == q2.data_ptr() and got_k.data_ptr() == k2.data_ptr()
    torch.testing.assert_close(got_q, want_q, rtol=0, atol=0)
    torch.testing.assert_close(got_k, want_k, rtol=0, atol=0)


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_rope_strided_layouts(dtype):
    """[B, N, H, d] storage seen as [B, H, N, d]; q/k slices of a fused qkv projection; a view
    one element off 16-byte alignment (scalar path)."""
    B, H, HK, N, D, R = 2, 4, 2, 19, 64, 64
    qkv = randn((B, N, H + 2 * HK, D), dtype)
    q, k = qkv[:, :, :H].transpose(1, 2), qkv[:, :, H:H + HK].transpose(1, 2)
    positions = make_positions("batch64", B, N, "cuda", max_pos=5000)
    table = flashkernel.rope_cache(5001, R)
    outs = flashkernel.rope(q, k, *table, positions)
    for x, out in zip((q, k), outs):
        ref, mag = reference(x, positions, R, "neox", table=table)
        assert_rope_close(out, ref, mag, "qkv view")
    before = qkv.clone()
    flashkernel.rope_fused(q, k, positions, inplace=True)
    for x, out in zip((before[:, :, :H].transpose(1, 2), before[:, :, H:H + HK].transpose(1, 2)), (q, k)):
        ref, mag = reference(x, positions, R, "neox")
        assert_rope_close(out, ref, mag, "qkv view in place")
    torch.testing.assert_close(qkv[:, :, H + HK:], before[:, :, H + HK:], rtol=0, atol=0)  # v untouched
    flat = randn(B * H * N * D + 1, dtype)
    q1 = flat[1:].view(B, H, N, D)
    k1 = randn((B, HK, N, D), dtype)
    for x, out in zip((q1, k1), flashkernel.rope(q1, k1, *table, positions)):
        ref, mag = reference(x, positions, R, "neox", table=table)
        assert_rope_close(out, ref, mag, "misaligned")


@gpu
@pytest.mark.parametrize("style", STYLES)
def test_rope_writes_every_element(style):
    """Outputs land in memory the allocator just held NaN in: nothing may stay NaN, and the
    pass-through dims must be exact copies."""
    B, HQ, HK, N, D, R = 2, 4, 4, 50, 128, 32
    q, k = make_qk(B, HQ, HK, N, D, torch.float16, "cuda")
    table = flashkernel.rope_cache(N, R)
    for fn in (lambda: flashkernel.rope(q, k, *table, style=style),
               lambda: flashkernel.rope_fused(q, k, style=style, rotary_dim=R)):
        junk = [poisoned(q.shape, q.dtype), poisoned(k.shape, k.dtype)]
        del junk
        qo, ko = fn()
        assert not torch.isnan(qo).any() and not torch.isnan(ko).any()
        torch.testing.assert_close(qo[..., R:], q[..., R:], rtol=0, atol=0)
        torch.testing.assert_close(ko[..., R:], k[..., R:], rtol=0, atol=0)


@gpu
def test_rope_empty_inputs():
    q, k = randn((2, 4, 0, 64), torch.float16), randn((2, 0, 0, 64), torch.float16)
    qo, ko = flashkernel.rope_fused(q, k)
    assert qo.shape == q.shape and ko.shape == k.shape
    qo, ko = flashkernel.rope(q, k, *flashkernel.rope_cache(4, 64))
    assert qo.shape == q.shape


@gpu
def test_rope_torch_compile_and_opcheck():
    B, HQ, HK, N, D = 2, 4, 2, 16, 64
    q, k = make_qk(B, HQ, HK, N, D, torch.float16, "cuda")
    cos, sin = flashkernel.rope_cache(N, D)
    positions = torch.arange(N, device="cuda", dtype=torch.int32).flip(0)

    def f(q, k):
        a, b = flashkernel.rope(q, k, cos, sin, positions)
        c, d = flashkernel.rope_fused(q, k, positions, style="gptj")
        return a * 2 + c, b - d

    compiled = torch.compile(f, fullgraph=True)
    for x, y in zip(compiled(q, k), f(q, k)):
        torch.testing.assert_close(x, y)
    torch.library.opcheck(torch.ops.flashkernel.rope.default, (q, k, cos, sin, positions, "neox", None))
    torch.library.opcheck(torch.ops.flashkernel.rope_.default, (q.clone(), k.clone(), cos, sin, None, "gptj", None))
    torch.library.opcheck(torch.ops.flashkernel.rope_fused.default, (q, k, positions, 10000.0, "neox", 32))
    torch.library.opcheck(torch.ops.flashkernel.rope_fused_.default, (q.clone(), k.clone(), None, 500000.0, "gptj", None))


# ------------------------------------------------------------------ CUDA: errors
@gpu
def test_rope_in_place_on_overlapping_q_and_k_is_rejected():
    """q's and k's heads are rotated by different threads: the same tensor as q and k in place
    (rotated twice, racing) or k overlapping q is an error naming k, and nothing is written.
    Identical inputs rotated out of place only share reads and still work."""
    B, H, N, D = 2, 4, 8, 64
    q, _ = make_qk(B, H, 1, N, D, torch.float16, "cuda")
    before = q.clone()
    with pytest.raises(ValueError, match="argument 'k' shares memory with q"):
        flashkernel.rope_fused(q, q, inplace=True)
    buf = randn((B, N, H + 1, D), torch.float16)
    q_view, k_view = buf[:, :, :H].transpose(1, 2), buf[:, :, H - 1:].transpose(1, 2)  # one head shared
    buf_before = buf.clone()
    with pytest.raises(ValueError, match="argument 'k' shares memory with q"):
        flashkernel.rope_fused(q_view, k_view, inplace=True)
    torch.testing.assert_close(q, before, rtol=0, atol=0)
    torch.testing.assert_close(buf, buf_before, rtol=0, atol=0)
    out_q, out_k = flashkernel.rope_fused(q, q)
    torch.testing.assert_close(out_q, out_k, rtol=0, atol=0)
    ref, mag = reference(q, None, D, "neox")
    assert_rope_close(out_q, ref, mag, "identical inputs out of place")


def test_rope_cpu_tensor_names_argument():
    q = torch.ones(1, 1, 2, 8)
    with pytest.raises(ValueError, match="argument 'q' must be a CUDA tensor"):
        flashkernel.rope_fused(q, q)
    with pytest.raises(ValueError, match="argument 'device' must be a CUDA device"):
        flashkernel.rope_cache(8, 8, device="cpu")


@gpu
def test_rope_bad_inputs_name_the_argument():
    q, k = make_qk(2, 4, 2, 8, 64, torch.float16, "cuda")
    cos, sin = flashkernel.rope_cache(16, 64)
    with pytest.raises(ValueError, match="argument 'rotary_dim' must be even"):
        flashkernel.rope_fused(q, k, rotary_dim=7)
    with pytest.raises(ValueError, match="argument 'rotary_dim' must be even"):
        flashkernel.rope_cache(16, 7)
    with pytest.raises(ValueError, match="argument 'rotary_dim' must be <= head_dim"):
        flashkernel.rope_fused(q, k, rotary_dim=66)
    with pytest.raises(ValueError, match="argument 'rotary_dim'"):
        flashkernel.rope(q, k, cos, sin, rotary_dim=32)
    with pytest.raises(ValueError, match="argument 'positions' has values in"):
        flashkernel.rope(q, k, cos, sin, torch.full((8,), 16, device="cuda"))
    with pytest.raises(ValueError, match="argument 'positions' has values in"):
        flashkernel.rope(q, k, cos, sin, torch.full((2, 8), -1, device="cuda", dtype=torch.int32))
    with pytest.raises(ValueError, match="table has 4 positions but seq is 8"):
        flashkernel.rope(q, k, *flashkernel.rope_cache(4, 64))
    with pytest.raises(ValueError, match="argument 'positions' must have shape"):
        flashkernel.rope_fused(q, k, torch.arange(7, device="cuda"))
    with pytest.raises(TypeError, match="argument 'positions' must be int32 or int64"):
        flashkernel.rope_fused(q, k, torch.arange(8, device="cuda").float())
    with pytest.raises(ValueError, match="argument 'q' must be 4-D"):
        flashkernel.rope_fused(q[0], k)
    with pytest.raises(ValueError, match="must agree on batch, seq and head_dim"):
        flashkernel.rope_fused(q, k[:, :, :4])
    with pytest.raises(TypeError, match="same dtype"):
        flashkernel.rope_fused(q, k.float())
    with pytest.raises(ValueError, match="contiguous last dimension"):
        flashkernel.rope_fused(q.transpose(2, 3), k.transpose(2, 3))
    with pytest.raises(ValueError, match="argument 'style'"):
        flashkernel.rope_fused(q, k, style="llama")
    with pytest.raises(ValueError, match="argument 'base'"):
        flashkernel.rope_fused(q, k, base=-1.0)
    with pytest.raises(ValueError, match="'cos' and 'sin' must have the same shape"):
        flashkernel.rope(q, k, cos.half(), sin.half()[:8])
    with pytest.raises(ValueError, match="argument 'cos'"):
        flashkernel.rope(q.float(), k.float(), cos.half(), sin.half())


# ------------------------------------------------------------------ Triton twins
@triton_twin
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("shape", TINY_SHAPES)
@pytest.mark.parametrize("pos_kind", [None, "batch64"])
def test_triton_rope_matches_reference(shape, style, dtype, pos_kind):
    dev = triton_device()
    B, HQ, HK, N, D, R = shape
    q, k = make_qk(B, HQ, HK, N, D, dtype, dev)
    positions = make_positions(pos_kind, B, N, dev)
    if pos_kind is not None:
        positions = positions.to(torch.int32)
    table = flashkernel.triton.rope_cache(table_rows(positions, N), R, device=dev)
    for x, out in zip((q, k), flashkernel.triton.rope(q, k, *table, positions, style=style)):
        ref, mag = reference(x, positions, R, style, table=table)
        assert_rope_close(out, ref, mag, f"triton rope {shape} {style} {dtype}")
    for x, out in zip((q, k), flashkernel.triton.rope_fused(q, k, positions, style=style, rotary_dim=R)):
        ref, mag = reference(x, positions, R, style)
        assert_rope_close(out, ref, mag, f"triton rope_fused {shape} {style} {dtype}")


@triton_twin
def test_triton_rope_cache_and_inplace():
    dev = triton_device()
    P, R = 300, 16
    cos, sin = flashkernel.triton.rope_cache(P, R, device=dev)
    th = angles(torch.arange(P), R).double()
    assert ((cos.cpu().double() - th.cos()).abs() <= 2 * ulp(th.cos(), torch.float32)).all()
    assert ((sin.cpu().double() - th.sin()).abs() <= 2 * ulp(th.sin(), torch.float32)).all()
    q, k = make_qk(2, 2, 1, 4, 24, torch.float16, dev)
    positions = make_positions("flat32", 2, 4, dev, max_pos=P - 1)
    want = flashkernel.triton.rope(q, k, cos, sin, positions, style="gptj")
    q2, k2 = q.clone(), k.clone()
    got = flashkernel.triton.rope(q2, k2, cos, sin, positions, style="gptj", inplace=True)
    assert got[0].data_ptr() == q2.data_ptr()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    strided = q.transpose(1, 2).contiguous().transpose(1, 2)  # [B, N, H, d] storage
    for a, b in zip(flashkernel.triton.rope_fused(strided, k, positions), flashkernel.triton.rope_fused(q, k, positions)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@triton_twin
def test_triton_rope_bad_inputs():
    dev = triton_device()
    q, k = make_qk(1, 2, 1, 4, 16, torch.float32, dev)
    cos, sin = flashkernel.triton.rope_cache(4, 16, device=dev)
    with pytest.raises(ValueError, match="argument 'rotary_dim' must be even"):
        flashkernel.triton.rope_fused(q, k, rotary_dim=5)
    with pytest.raises(ValueError, match="argument 'positions' has values in"):
        flashkernel.triton.rope(q, k, cos, sin, torch.tensor([0, 1, 2, 4], device=dev))
    with pytest.raises(ValueError, match="must agree on batch, seq and head_dim"):
        flashkernel.triton.rope(q, k[:, :, :2], cos, sin)
    with pytest.raises(ValueError, match="argument 'style'"):
        flashkernel.triton.rope_fused(q, k, style="x")
