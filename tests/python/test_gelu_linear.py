"""gelu_linear (torch.ops.flashkernel.gelu_linear) and its Triton twin against
F.gelu(F.linear(...)) computed in float64 from the same 16-bit inputs: the issue's grid of M and
(K, N), both GeLU forms, with and without bias, 3-D x, argument errors, torch.compile, opcheck."""
import pytest
import torch
import torch.nn.functional as F

import flashkernel
import flashkernel.triton
from flashkernel.triton.gelu_linear import LARGE_M_CONFIGS, SMALL_M_CONFIGS, gelu_linear_with_config
from helpers import TRITON_INTERPRET, gpu, max_rel_error, randn, triton_device, triton_twin

DTYPES = [torch.float16, torch.bfloat16]
# Max error relative to the output's scale (max |ref|): fp16 < 1e-3 (the bound; one fp16
# rounding is 4.9e-4 of a value), bf16 < 8e-3 (one bf16 rounding is 3.9e-3).
SCALE_TOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}
M_VALUES = [1, 7, 128, 513, 2048]
KN_VALUES = [(768, 3072), (3072, 768), (64, 8)]


def make_inputs(lead, k, n, dtype, bias=True, device="cuda"):
    # Weights ~ U-like scale 1/sqrt(k): pre-activations O(1), where the two GeLUs differ most.
    x = randn((*lead, k), dtype, device=device)
    w = randn((n, k), dtype, device=device, scale=k ** -0.5)
    b = randn(n, dtype, device=device) if bias else None
    return x, w, b


def reference(x, w, b, approximate):
    y = F.linear(x.double(), w.double(), None if b is None else b.double())
    return F.gelu(y, approximate=approximate)


def fresh_output_is_poisoned(shape, dtype):
    """Fill and free a NaN block of the output's size: the caching allocator hands the same block to
    the op's output, so any element the kernel forgets to write stays NaN."""
    t = torch.full(shape, float("nan"), dtype=dtype, device="cuda")
    del t


def check(out, ref, dtype, what):
    assert not torch.isnan(out).any(), f"{what}: NaN in output"
    err = max_rel_error(out, ref)
    assert err < SCALE_TOL[dtype], f"{what}: max error {err:.3e} of the output scale >= {SCALE_TOL[dtype]}"


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("kn", KN_VALUES)
@pytest.mark.parametrize("m", M_VALUES)
def test_gelu_linear_matches_reference(m, kn, with_bias, approximate, dtype):
    k, n = kn
    x, w, b = make_inputs((m,), k, n, dtype, with_bias)
    fresh_output_is_poisoned((m, n), dtype)
    out = flashkernel.gelu_linear(x, w, b, approximate=approximate)
    assert out.shape == (m, n) and out.dtype == dtype and out.is_cuda
    check(out, reference(x, w, b, approximate), dtype, f"m={m} k={k} n={n}")


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [33, 64, 65, 127])
def test_gelu_linear_around_the_small_m_switch(m, dtype):
    x, w, b = make_inputs((m,), 520, 264, dtype)
    check(flashkernel.gelu_linear(x, w, b, approximate="tanh"), reference(x, w, b, "tanh"), dtype, f"m={m}")


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_linear_3d_input_and_default_erf(dtype):
    x, w, b = make_inputs((3, 37), 768, 3072, dtype)
    out = flashkernel.gelu_linear(x, w, b)
    assert out.shape == (3, 37, 3072)
    check(out, reference(x, w, b, "none"), dtype, "3-D x")
    # 1-D x is one row, as in F.linear.
    out1 = flashkernel.gelu_linear(x[0, 0], w, b)
    assert out1.shape == (3072,)
    check(out1, reference(x[0, 0], w, b, "none"), dtype, "1-D x")


@gpu
def test_gelu_linear_forms_differ_as_in_fp64():
    # The kernel's tanh - erf difference must track fp64's (catches a swapped or wrong form that a
    # loose tolerance alone could miss on small outputs).
    x, w, b = make_inputs((256,), 64, 64, torch.float16)
    w = w * 8  # pre-activations spread over [-4, 4], where the forms differ most
    diff = (flashkernel.gelu_linear(x, w, b, approximate="tanh").double()
            - flashkernel.gelu_linear(x, w, b, approximate="none").double())
    diff_ref = reference(x, w, b, "tanh") - reference(x, w, b, "none")
    assert diff_ref.abs().max() > 1e-4
    scale = reference(x, w, b, "none").abs().max()
    assert (diff - diff_ref).abs().max() < 2e-3 * scale


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("mkn", [(2048, 768, 3072), (1100, 72, 2048), (2000, 3072, 776)])
def test_gelu_linear_portable_kernel_on_any_gpu(mkn, approximate, dtype):
    # On Hopper large M takes the wgmma kernel; this runs the mma.sync (sm_80) kernels there too.
    m, k, n = mkn
    x, w, b = make_inputs((m,), k, n, dtype)
    fresh_output_is_poisoned((m, n), dtype)
    check(flashkernel.gelu_linear(x, w, b, approximate=approximate, backend="sm80"), reference(x, w, b, approximate),
          dtype, f"sm80 m={m} k={k} n={n}")


@gpu
@pytest.mark.parametrize("backend", ["sm90_wide", "sm90_mid", "sm90_narrow", "sm90_pingpong"])
@pytest.mark.parametrize("mkn", [(2048, 768, 3072), (1537, 200, 3080), (2000, 3072, 776), (2048, 8, 3072)])
def test_gelu_linear_each_hopper_kernel(mkn, backend):
    # Each variant of the large-M Hopper kernel on the same checks; off Hopper, naming one is an
    # error that names the argument. K = 8: one k-step whose 56 columns past K the TMA copies fill
    # with zeros.
    m, k, n = mkn
    for dtype in DTYPES:
        x, w, b = make_inputs((m,), k, n, dtype)
        if torch.cuda.get_device_capability()[0] != 9:
            with pytest.raises(ValueError, match="'backend'"):
                flashkernel.gelu_linear(x, w, b, backend=backend)
            continue
        for approximate in ("none", "tanh"):
            check(flashkernel.gelu_linear(x, w, b, approximate=approximate, backend=backend),
                  reference(x, w, b, approximate), dtype, f"{backend} m={m} k={k} n={n} {approximate}")


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("backend", ["fastest", "", "SM80"])
def test_gelu_linear_unknown_backend_names_the_argument(backend, device):
    # The fake implementation (meta tensors, torch.compile) and the C++ op (which CPU tensors
    # reach, so the message comes before the device check) say the same thing.
    x, w = (torch.empty(shape, device=device, dtype=torch.float16) for shape in ((2, 8), (8, 8)))
    with pytest.raises(ValueError, match=f"^flashkernel.gelu_linear: argument 'backend' must be 'auto', .* got '{backend}'$"):
        flashkernel.gelu_linear(x, w, backend=backend)


@gpu
def test_gelu_linear_empty_rows():
    x, w, b = make_inputs((0,), 64, 16, torch.float16)
    assert flashkernel.gelu_linear(x, w, b).shape == (0, 16)


@gpu
def test_gelu_linear_torch_compile_fullgraph():
    x, w, b = make_inputs((5, 9), 64, 32, torch.float16)

    def f(x, w, b):
        return flashkernel.gelu_linear(x, w, b, approximate="tanh") * 2

    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x, w, b), f(x, w, b))


@gpu
def test_gelu_linear_opcheck():
    x, w, b = make_inputs((7,), 64, 24, torch.bfloat16)
    torch.library.opcheck(torch.ops.flashkernel.gelu_linear.default, (x, w, b), {"approximate": "tanh"})
    torch.library.opcheck(torch.ops.flashkernel.gelu_linear.default, (x, w, None))


def test_gelu_linear_cpu_tensor_names_argument():
    with pytest.raises(ValueError, match="argument 'x' must be a CUDA tensor"):
        flashkernel.gelu_linear(torch.ones(2, 8, dtype=torch.float16), torch.ones(8, 8, dtype=torch.float16))


def bad_input_cases(device):
    x, w, b = make_inputs((4,), 64, 16, torch.float16, device=device)
    return [
        ((x, w, b), {"approximate": "fast"}, ValueError, "argument 'approximate'"),
        ((x.float(), w.float(), None), {}, TypeError, "argument 'x' has unsupported dtype"),
        ((x, w.bfloat16(), None), {}, TypeError, "'x' and 'weight' must have the same dtype"),
        ((x, w, b.bfloat16()), {}, TypeError, "'x' and 'bias' must have the same dtype"),
        ((x, w[:, :60], None), {}, ValueError, "argument 'weight' must have in_features"),
        ((x[:, :60], w[:12, :60].contiguous(), None), {}, ValueError, "argument 'weight' must have"),
        ((x, w[:12], None), {}, ValueError, "argument 'weight' must have out_features"),
        ((x, w.reshape(2, 8, 64), None), {}, ValueError, "argument 'weight' must be 2-D"),
        ((x[:, :32], w, None), {}, ValueError, "argument 'x' must have last dimension"),
        ((x, w, b[:8]), {}, ValueError, "argument 'bias' must have shape"),
    ]


@gpu
@pytest.mark.parametrize("case", range(10))
def test_gelu_linear_bad_inputs_name_the_argument(case):
    args, kwargs, exc, msg = bad_input_cases("cuda")[case]
    with pytest.raises(exc, match=msg):
        flashkernel.gelu_linear(*args, **kwargs)


@gpu
def test_gelu_linear_layout_errors():
    x, w, b = make_inputs((64,), 64, 64, torch.float16)
    with pytest.raises(ValueError, match="argument 'x' must be contiguous"):
        flashkernel.gelu_linear(x.t(), w)
    with pytest.raises(ValueError, match="argument 'weight' must be contiguous"):
        flashkernel.gelu_linear(x, w.t())
    # A contiguous view 8 bytes past a 16-byte boundary: cp.async needs 16-byte aligned rows.
    shifted = torch.empty(8 * 64 + 4, dtype=torch.float16, device="cuda")[4:].view(8, 64)
    with pytest.raises(ValueError, match="argument 'x' must be 16-byte aligned"):
        flashkernel.gelu_linear(shifted, w)
    with pytest.raises(ValueError, match="argument 'bias' must be a CUDA tensor"):
        flashkernel.gelu_linear(x, w, b.cpu())


# ----------------------------------------------------------------------------------- Triton twin
TRITON_DTYPES = [torch.float16] if TRITON_INTERPRET else DTYPES
# The interpreter runs on numpy, which has no bfloat16: bf16 is covered by the GPU lane only.
TRITON_SHAPES = ([(1, 64, 8), (7, 72, 40), (33, 64, 24)] if TRITON_INTERPRET
                 else [(1, 768, 3072), (7, 64, 8), (128, 3072, 768), (513, 768, 3072)])


@triton_twin
@pytest.mark.parametrize("dtype", TRITON_DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("shape", TRITON_SHAPES)
def test_triton_gelu_linear(shape, approximate, dtype):
    m, k, n = shape
    x, w, b = make_inputs((m,), k, n, dtype, device=triton_device())
    out = flashkernel.triton.gelu_linear(x, w, b, approximate=approximate)
    assert out.shape == (m, n) and out.dtype == dtype
    check(out, reference(x, w, b, approximate), dtype, f"triton m={m} k={k} n={n}")


@triton_twin
def test_triton_gelu_linear_no_bias_3d():
    x, w, _ = make_inputs((2, 5), 64, 16, torch.float16, bias=False, device=triton_device())
    out = flashkernel.triton.gelu_linear(x, w, None, approximate="tanh")
    assert out.shape == (2, 5, 16)
    check(out, reference(x, w, None, "tanh"), torch.float16, "triton 3-D, no bias")


@triton_twin
@pytest.mark.parametrize("case", range(10))
def test_triton_gelu_linear_bad_inputs(case):
    args, kwargs, exc, msg = bad_input_cases(triton_device())[case]
    with pytest.raises(exc, match=msg):
        flashkernel.triton.gelu_linear(*args, **kwargs)


# The suite runs the twin with one fixed configuration per M family (FLASHKERNEL_TRITON_AUTOTUNE=0,
# set by conftest.py); this runs every configuration the autotuner may pick, on a shape with a
# partial tile of every block size (M = 65, K = 200, N = 136) and at decode size (M = 7).
CONFIGS = LARGE_M_CONFIGS + SMALL_M_CONFIGS


def config_id(i):
    c = CONFIGS[i]
    family = "large" if i < len(LARGE_M_CONFIGS) else "small"
    return f"{family}-{c.kwargs['BLOCK_M']}x{c.kwargs['BLOCK_N']}x{c.kwargs['BLOCK_K']}-w{c.num_warps}-s{c.num_stages}"


@triton_twin
@pytest.mark.parametrize("dtype", TRITON_DTYPES)
@pytest.mark.parametrize("config", range(len(CONFIGS)), ids=config_id)
def test_triton_gelu_linear_every_config(config, dtype):
    cfg = CONFIGS[config]
    # fp16 with bias and tanh, bf16 without bias and erf: both epilogues for every configuration.
    with_bias, approximate = (True, "tanh") if dtype == torch.float16 else (False, "none")
    for m in (65, 7):
        x, w, b = make_inputs((m,), 200, 136, dtype, with_bias, device=triton_device())
        out = gelu_linear_with_config(x, w, b, cfg, approximate=approximate)
        assert out.shape == (m, 136) and out.dtype == dtype
        check(out, reference(x, w, b, approximate), dtype, f"config {cfg} m={m}")


def test_gelu_linear_compiles_with_every_argument():
    # Inductor lowers the op as a fallback kernel; an op argument named like one of its own
    # parameters (`kernel`, the first version's name for `backend`) failed there. The lowering
    # runs before any kernel, so CPU tensors show it: they must reach the op's own device check.
    def f(x, w):
        return flashkernel.gelu_linear(x, w, approximate="tanh", backend="auto")

    x, w = torch.randn(4, 8, dtype=torch.float16), torch.randn(8, 8, dtype=torch.float16)
    with pytest.raises(ValueError, match="argument 'x' must be a CUDA tensor"):
        torch.compile(f, fullgraph=True)(x, w)
