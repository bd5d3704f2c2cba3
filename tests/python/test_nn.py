"""flashkernel.nn: the module wrappers load the PyTorch modules' state dicts (CPU tests) and match
the PyTorch modules they replace within the op tests' tolerances (GPU tests)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import flashkernel
from flashkernel.nn import AddLayerNorm, AddRMSNorm, FlashAttention, GeluLinear, RotaryEmbedding
from helpers import assert_within_torch_error, fresh_generator, gpu, max_rel_error, randn


def randomize_(module: nn.Module) -> nn.Module:
    """Every parameter random (not the init's ones/zeros), so a copy that drops one shows."""
    g, _ = fresh_generator()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g).to(p.dtype))
    return module


def assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].shape == sb[key].shape and sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


# ------------------------------------------------------------------ AddLayerNorm (CPU)
@pytest.mark.parametrize("affine,bias", [(True, True), (True, False), (False, True)])
def test_add_layernorm_state_dict_round_trips_with_nn_layernorm(affine, bias):
    ln = randomize_(nn.LayerNorm(64, elementwise_affine=affine, bias=bias))
    ours = AddLayerNorm(64, elementwise_affine=affine, bias=bias)
    ours.load_state_dict(ln.state_dict())
    assert_same_state(ours, ln)
    back = nn.LayerNorm(64, elementwise_affine=affine, bias=bias)
    back.load_state_dict(randomize_(ours).state_dict())
    assert_same_state(back, ours)


def test_add_layernorm_defaults_are_nn_layernorms():
    ours, ln = AddLayerNorm(48, eps=1e-6), nn.LayerNorm(48, eps=1e-6)
    assert_same_state(ours, ln)
    assert ours.eps == ln.eps and ours.normalized_shape == ln.normalized_shape


def test_add_layernorm_from_layernorm_copies_config_dtype_and_values():
    ln = randomize_(nn.LayerNorm((32,), eps=1e-3, dtype=torch.float16))
    ours = AddLayerNorm.from_layernorm(ln)
    assert ours.eps == 1e-3 and ours.weight.dtype == torch.float16
    assert_same_state(ours, ln)
    assert ours.weight.data_ptr() != ln.weight.data_ptr()  # a copy, not a view


def test_add_layernorm_argument_errors():
    with pytest.raises(ValueError, match="'normalized_shape'"):
        AddLayerNorm((4, 8))
    with pytest.raises(ValueError, match="'normalized_shape'"):
        AddLayerNorm(0)
    with pytest.raises(TypeError, match="nn.LayerNorm"):
        AddLayerNorm.from_layernorm(nn.Linear(8, 8))
    with pytest.raises(RuntimeError, match="size mismatch"):
        AddLayerNorm(64).load_state_dict(nn.LayerNorm(32).state_dict())


# ------------------------------------------------------------------ AddRMSNorm (CPU)
@pytest.mark.parametrize("affine", [True, False])
def test_add_rms_norm_state_dict_round_trips_with_nn_rmsnorm(affine):
    rms = randomize_(nn.RMSNorm(64, eps=1e-6, elementwise_affine=affine))
    ours = AddRMSNorm.from_rmsnorm(rms)
    assert ours.eps == 1e-6 and ours.normalized_shape == (64,)
    assert_same_state(ours, rms)
    with pytest.raises(TypeError, match="nn.RMSNorm"):
        AddRMSNorm.from_rmsnorm(nn.LayerNorm(8))
    with pytest.raises(ValueError, match="'normalized_shape'"):
        AddRMSNorm((4, 8))


# ------------------------------------------------------------------ GeluLinear (CPU)
@pytest.mark.parametrize("bias", [True, False])
def test_gelu_linear_state_dict_round_trips_with_nn_linear(bias):
    linear = randomize_(nn.Linear(64, 24, bias=bias))
    ours = GeluLinear(64, 24, bias=bias)
    assert ours.weight.shape == (24, 64) and (ours.bias is None) == (not bias)
    ours.load_state_dict(linear.state_dict())
    assert_same_state(ours, linear)
    back = nn.Linear(64, 24, bias=bias)
    back.load_state_dict(randomize_(ours).state_dict())
    assert_same_state(back, ours)


def test_gelu_linear_initialization_is_nn_linears():
    ours = GeluLinear(256, 128)
    bound = 1 / math.sqrt(256)
    assert ours.weight.abs().max() <= bound and ours.bias.abs().max() <= bound
    assert ours.weight.std() > bound / 4  # not all zeros: uniform on [-bound, bound] has std bound/sqrt(3)


def test_gelu_linear_from_linear():
    linear = randomize_(nn.Linear(16, 8, dtype=torch.bfloat16))
    ours = GeluLinear.from_linear(linear, approximate="tanh")
    assert ours.approximate == "tanh" and ours.weight.dtype == torch.bfloat16
    assert (ours.in_features, ours.out_features) == (16, 8)
    assert_same_state(ours, linear)
    no_bias = GeluLinear.from_linear(nn.Linear(8, 16, bias=False))
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight"]


def test_gelu_linear_argument_errors():
    with pytest.raises(ValueError, match="'in_features'.*multiple of 8"):
        GeluLinear(12, 8)
    with pytest.raises(ValueError, match="'out_features'.*multiple of 8"):
        GeluLinear(8, 0)
    with pytest.raises(ValueError, match="'approximate'"):
        GeluLinear(8, 8, approximate="exact")
    with pytest.raises(TypeError, match="nn.Linear"):
        GeluLinear.from_linear(nn.LayerNorm(8))
    with pytest.raises(RuntimeError, match="size mismatch"):
        GeluLinear(16, 8).load_state_dict(nn.Linear(8, 16).state_dict())
    with pytest.raises(ValueError, match="'x' must be a CUDA tensor"):
        GeluLinear(16, 8, dtype=torch.float16)(torch.zeros(2, 16, dtype=torch.float16))


# ------------------------------------------------------------------ RotaryEmbedding (CPU)
def convention_tables(max_positions, dim, base):
    """flashkernel.ops.rope's convention in float64: fp32 inverse frequencies, fp32 angles."""
    inv = (1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))).to(torch.float32)
    theta = (torch.arange(max_positions, dtype=torch.float32)[:, None] * inv).double()
    return theta.cos(), theta.sin()


@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_rotary_tables_follow_the_convention(base):
    rot = RotaryEmbedding(64, max_positions=4096, base=base)
    assert rot.cos.shape == rot.sin.shape == (4096, 32) and rot.cos.dtype == torch.float32
    want_cos, want_sin = convention_tables(4096, 64, base)
    # torch's fp32 cos/sin of the same fp32 angle: within a few fp32 ulps of |value| <= 1
    assert (rot.cos.double() - want_cos).abs().max() <= 4 * torch.finfo(torch.float32).eps
    assert (rot.sin.double() - want_sin).abs().max() <= 4 * torch.finfo(torch.float32).eps


def test_rotary_tables_are_not_in_the_state_dict():
    rot = RotaryEmbedding(16, max_positions=8)
    assert rot.state_dict() == {} and list(rot.parameters()) == []
    assert {name for name, _ in rot.named_buffers()} == {"cos", "sin"}
    rot.load_state_dict({})  # a model's state dict without rotary tables loads


def test_rotary_argument_errors():
    for dim in (0, 7, 2.0):
        with pytest.raises(ValueError, match="'dim'"):
            RotaryEmbedding(dim)
    with pytest.raises(ValueError, match="'max_positions'"):
        RotaryEmbedding(8, max_positions=0)
    with pytest.raises(ValueError, match="'style'"):
        RotaryEmbedding(8, style="llama")


# ------------------------------------------------------------------ FlashAttention (CPU)
def test_flash_attention_module_has_no_state():
    attn = FlashAttention(causal=True)
    assert attn.state_dict() == {} and list(attn.parameters()) == []
    assert "causal=True" in repr(attn)


def test_flash_attention_module_checks_arguments():
    q = torch.zeros(1, 2, 4, 64, dtype=torch.float16)
    with pytest.raises(ValueError, match="must be a CUDA tensor"):
        FlashAttention()(q, q, q)


def test_flash_attention_module_takes_window_and_softcap():
    attn = FlashAttention(causal=True, window=(128, 0), softcap=30.0)
    assert "window=(128, 0)" in repr(attn) and "softcap=30.0" in repr(attn)
    with pytest.raises(ValueError, match="'window'"):
        FlashAttention(window=(1, 2, 3))
    with pytest.raises(ValueError, match="'softcap'"):
        FlashAttention(softcap=-1.0)


def test_modules_are_exported():
    assert flashkernel.nn.GeluLinear is GeluLinear
    assert set(flashkernel.nn.__all__) == {"AddLayerNorm", "AddRMSNorm", "FlashAttention", "GeluLinear", "RotaryEmbedding"}


# ------------------------------------------------------------------ GPU: each wrapper vs the PyTorch module
# Tolerances are those of the op tests: test_layernorm.py (TOL), test_gelu_linear.py (SCALE_TOL),
# test_rope.py (assert_rope_close), test_attention.py (assert_within_torch_error).
LN_TOL = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
GELU_SCALE_TOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 768), (2, 3, 1000)])
def test_add_layernorm_module_matches_nn_layernorm(dtype, shape):
    c = shape[-1]
    ln = nn.LayerNorm(c, device="cuda", dtype=dtype)
    g, _ = fresh_generator()
    with torch.no_grad():  # test_layernorm.py's parameters: weight ~ 1 + N(0, 0.5), bias ~ N(0, 1)
        ln.weight.copy_(torch.randn(c, generator=g) * 0.5 + 1)
        ln.bias.copy_(torch.randn(c, generator=g))
    ours = AddLayerNorm.from_layernorm(ln)
    x, r = randn(shape, dtype) + 3, randn(shape, dtype)
    out, new_residual = ours(x, r)
    assert out.shape == x.shape and out.dtype == dtype and new_residual.dtype == dtype
    s = x + r  # what the PyTorch block computes: the sum, rounded to dtype once, then nn.LayerNorm
    tol = LN_TOL[dtype]
    assert (new_residual.double() - s.double()).abs().max().item() <= tol * (1 + s.double().abs().max().item())
    ref = F.layer_norm(s.double(), (c,), ln.weight.double(), ln.bias.double(), ln.eps)
    assert not torch.isnan(out).any()
    assert (out.double() - ref).abs().max().item() <= 4 * tol
    with torch.no_grad():
        assert (ln(s).double() - ref).abs().max().item() <= 4 * tol  # the module replaced, same bar


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("eps", [None, 1e-5])
def test_add_rms_norm_module_matches_nn_rmsnorm(dtype, eps):
    rms = nn.RMSNorm(4096, eps=eps, device="cuda", dtype=dtype)
    g, _ = fresh_generator()
    with torch.no_grad():
        rms.weight.copy_(torch.randn(4096, generator=g) * 0.5 + 1)
    ours = AddRMSNorm.from_rmsnorm(rms)
    x, r = randn((3, 4096), dtype), randn((3, 4096), dtype)
    out, s = ours(x, r)
    assert torch.equal(s, x + r)
    ref = F.rms_norm(s.double(), (4096,), rms.weight.double(), eps if eps is not None else torch.finfo(dtype).eps)
    assert (out.double() - ref).abs().max().item() <= 4 * LN_TOL[dtype]


@gpu
def test_add_layernorm_module_without_residual_or_affine():
    ln = nn.LayerNorm(256, elementwise_affine=False, device="cuda", dtype=torch.float16)
    ours = AddLayerNorm.from_layernorm(ln)
    x = randn((4, 256), torch.float16)
    out, s = ours(x)
    assert torch.equal(s, x)
    ref = F.layer_norm(x.double(), (256,), eps=ln.eps)
    assert (out.double() - ref).abs().max().item() <= 4 * LN_TOL[torch.float16]


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead,k,n", [((7,), 768, 3072), ((2, 5), 64, 8)])
def test_gelu_linear_module_matches_linear_then_gelu(dtype, approximate, bias, lead, k, n):
    linear = nn.Linear(k, n, bias=bias, device="cuda", dtype=dtype)  # nn.Linear's init: pre-activations O(1)
    torch_module = nn.Sequential(linear, nn.GELU(approximate=approximate))
    ours = GeluLinear.from_linear(linear, approximate=approximate)
    x = randn((*lead, k), dtype)
    out = ours(x)
    assert out.shape == (*lead, n) and out.dtype == dtype
    ref = F.gelu(F.linear(x.double(), linear.weight.double(), None if not bias else linear.bias.double()),
                 approximate=approximate)
    assert not torch.isnan(out).any()
    assert max_rel_error(out, ref) < GELU_SCALE_TOL[dtype]
    # Against the replaced module's own low-precision output (two roundings: after the GEMM and after
    # the GeLU): both are within about one bar of the exact result, so within a few bars of each other.
    with torch.no_grad():
        assert max_rel_error(out, torch_module(x)) < 4 * GELU_SCALE_TOL[dtype]


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("style", ["neox", "gptj"])
def test_rotary_module_matches_the_rotation_formula(dtype, style):
    from test_rope import assert_rope_close, reference as rope_reference

    B, HQ, HK, N, D, R = 2, 8, 2, 33, 128, 64
    rot = RotaryEmbedding(R, max_positions=4096, style=style).cuda()
    assert rot.cos.is_cuda and rot.cos.dtype == torch.float32
    q, k = randn((B, HQ, N, D), dtype), randn((B, HK, N, D), dtype)
    g, _ = fresh_generator()
    positions = torch.randint(0, 4096, (B, N), generator=g).cuda()
    for pos in (positions, None):
        got_q, got_k = rot(q, k, pos)
        for x, got in ((q, got_q), (k, got_k)):
            want, mag = rope_reference(x, pos, R, style, table=(rot.cos, rot.sin))
            assert_rope_close(got, want, mag, f"RotaryEmbedding {style} {dtype}")


@gpu
def test_rotary_tables_built_on_the_gpu_match_the_cpu_ones():
    cpu = RotaryEmbedding(128, max_positions=8192, base=500000.0)
    gpu_built = RotaryEmbedding(128, max_positions=8192, base=500000.0, device="cuda")
    for a, b in ((cpu.cos, gpu_built.cos), (cpu.sin, gpu_built.sin)):
        assert b.is_cuda
        # sincosf on the GPU and torch's CPU cos/sin: each within 2 fp32 ulps of |value| <= 1
        assert (a.double() - b.cpu().double()).abs().max() <= 4 * torch.finfo(torch.float32).eps


@gpu
def test_rotary_module_matches_huggingface_rotate_half():
    B, H, N, D = 2, 4, 17, 64
    rot = RotaryEmbedding(D, max_positions=N).cuda()
    q, k = randn((B, H, N, D), torch.float32), randn((B, H, N, D), torch.float32)
    c, s = torch.cat((rot.cos, rot.cos), -1), torch.cat((rot.sin, rot.sin), -1)  # HF's [N, d] layout

    def rotate_half(x):
        return torch.cat((-x[..., D // 2:], x[..., :D // 2]), dim=-1)

    got_q, got_k = rot(q, k)
    for x, got in ((q, got_q), (k, got_k)):
        want = (x.double() * c.double() + rotate_half(x.double()) * s.double())
        assert (got.double() - want).abs().max().item() <= 8 * torch.finfo(torch.float32).eps * (1 + want.abs().max().item())


@gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hq,hkv,n", [(4, 4, 257), (8, 2, 128)])
def test_flash_attention_module_matches_sdpa(dtype, d, causal, hq, hkv, n):
    """Against F.scaled_dot_product_attention (Nq == Nk, where its is_causal is the same mask),
    with test_attention.py's rule: error at most 2x PyTorch's own low-precision attention's."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from test_attention import reference as attention_reference

    q, k, v = randn((2, hq, n, d), dtype), randn((2, hkv, n, d), dtype), randn((2, hkv, n, d), dtype)
    ours = FlashAttention(causal=causal)
    out = ours(q, k, v)
    assert out.shape == q.shape and out.dtype == dtype
    group = hq // hkv
    kk, vv = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)

    def sdpa64(is_causal):  # SDPA's math backend in float64: the exact result of the module replaced
        with sdpa_kernel(SDPBackend.MATH):
            return F.scaled_dot_product_attention(q.double(), kk.double(), vv.double(), is_causal=is_causal)

    ref = sdpa64(causal)
    lowp, _ = attention_reference(q, k, v, causal, dtype=dtype)
    assert_within_torch_error(out, ref, lowp, what=f"FlashAttention d={d} causal={causal} {dtype}")
    # forward's causal overrides the constructor's
    flipped = ours(q, k, v, causal=not causal)
    ref_flipped = sdpa64(not causal)
    lowp_flipped, _ = attention_reference(q, k, v, not causal, dtype=dtype)
    assert_within_torch_error(flipped, ref_flipped, lowp_flipped, what="causal override")
