"""reduce_sum / reduce_max through torch.ops.flashkernel and their Triton twins: the issue's shape
matrix, odd / empty / > 2^31-element sizes, misaligned views, NaN, bit-identity across runs,
CUDA-vs-Triton agreement, argument errors, torch.compile."""
import pytest
import torch

import flashkernel
import flashkernel.triton
from helpers import TRITON_INTERPRET, fresh_generator, gpu, randn, triton_device, triton_twin

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# The matrix: (shape, dtype).
MATRIX = [((1024,), torch.float32), ((4096,), torch.float32), ((1, 128, 4096), torch.float16),
          ((8, 64, 2048), torch.float16)]
ODD_SIZES = [0, 1, 31, 32, 33, 1023, (1 << 20) + 7]
# Relative error allowed on top of fp32 accumulation: the 1e-5 (fp32) / 1e-2 (16-bit).
RTOL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}

CUDA_IMPLS = {"sum": flashkernel.reduce_sum, "max": flashkernel.reduce_max}
TRITON_IMPLS = {"sum": flashkernel.triton.reduce_sum, "max": flashkernel.triton.reduce_max}


def torch_ref(op, x, dim):
    """fp64 reference (sum) or torch.amax (max, exact in any dtype), reduced over dim."""
    if op == "sum":
        x64 = x.double()
        return x64.sum() if dim is None else x64.sum(dim)
    return x.amax() if dim is None else x.amax(dim)


def sum_tolerance(x, dim):
    ref = torch_ref("sum", x, dim)
    abs_sum = x.double().abs().sum() if dim is None else x.double().abs().sum(dim)
    return RTOL[x.dtype] * ref.abs() + 1e-5 * abs_sum


def check(op, out, x, dim, what=""):
    """Shape and dtype as torch.sum/torch.amax give; sum within RTOL*|ref| + 1e-5*sum|x| (the
    second term: fp32 accumulation error, which scales with sum|x| whatever the order); max exact."""
    want_meta = (x.sum() if dim is None else x.sum(dim)) if op == "sum" else (x.amax() if dim is None else x.amax(dim))
    assert out.shape == want_meta.shape and out.dtype == want_meta.dtype, f"{what}: {out.shape} {out.dtype}"
    assert out.device == x.device
    ref = torch_ref(op, x, dim)
    if op == "max":
        torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True, msg=what)
        return
    err = (out.double() - ref).abs()
    tol = sum_tolerance(x, dim)
    assert not torch.isnan(out).any(), f"{what}: NaN in output"
    assert (err <= tol).all(), f"{what}: max error {err.max().item():.3e} (tolerance {tol.min().item():.3e})"


def check_every_dim(impls, op, x, label):
    """impls[op] reduced over each dim the shape has, against the reference."""
    for dim in dims_for(tuple(x.shape)):
        check(op, impls[op](x, dim), x, dim, f"{label}{op} {tuple(x.shape)} dim={dim}")


def dims_for(shape):
    return [None, -1] if len(shape) else [None]


# ----------------------------------------------------------------------------- CUDA op
@gpu
@pytest.mark.parametrize("op", ["sum", "max"])
@pytest.mark.parametrize("shape,dtype", MATRIX)
def test_matrix(op, shape, dtype):
    check_every_dim(CUDA_IMPLS, op, randn(shape, dtype), "")


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", ODD_SIZES)
def test_full_odd_sizes(n, dtype):
    x = randn(n, dtype)
    check("sum", flashkernel.reduce_sum(x), x, None, f"sum n={n}")
    if n:
        check("max", flashkernel.reduce_max(x), x, None, f"max n={n}")


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_full_sum_strict_relative_error_on_positive_inputs(dtype):
    # All-positive inputs: |sum| = sum|x|, so this is a plain relative-error bound.
    for n in [1000, 100_003, (1 << 22) + 1]:
        g, seed = fresh_generator("cuda")
        scale = min(1.0, 30000.0 / n)  # keeps the fp16 sum below fp16's max
        x = (torch.rand(n, generator=g, device="cuda") * scale).to(dtype)
        ref = x.double().sum()
        rel = ((flashkernel.reduce_sum(x).double() - ref).abs() / ref).item()
        bound = 1e-5 if dtype == torch.float32 else 1e-2
        assert rel < bound, f"n={n} seed={seed}: relative error {rel:.3e}"


@gpu
@pytest.mark.parametrize("op", ["sum", "max"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [1, 7, 31, 32, 33, 64, 128, 255, 1000, 2048, 2049, 4096, 10007])
def test_rows_every_kernel_choice(op, dtype, cols):
    x = randn((37, cols), dtype)
    check(op, CUDA_IMPLS[op](x, -1), x, -1, f"{op} rows cols={cols}")


@gpu
@pytest.mark.parametrize("op", ["sum", "max"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_misaligned_views(op, dtype):
    for n in [1, 33, 5001, (1 << 20) + 1]:
        x = randn(n + 3, dtype)[3:]  # contiguous, 6 or 12 bytes off 16-byte alignment
        check(op, CUDA_IMPLS[op](x), x, None, f"{op} x[3:] n={n}")
    for rows, cols in [(5, 33), (300, 129), (7, 3001)]:
        x = randn(rows * cols + 1, dtype)[1:].view(rows, cols)
        check(op, CUDA_IMPLS[op](x, -1), x, -1, f"{op} rows view {rows}x{cols}")


@gpu
def test_empty_and_degenerate_shapes():
    for dtype in DTYPES:
        for shape in [(0,), (3, 0), (0, 4), (2, 0, 5)]:
            x = torch.empty(shape, dtype=dtype, device="cuda")
            torch.testing.assert_close(flashkernel.reduce_sum(x), x.sum(), rtol=0, atol=0)
            torch.testing.assert_close(flashkernel.reduce_sum(x, -1), x.sum(-1), rtol=0, atol=0)
        torch.testing.assert_close(flashkernel.reduce_max(torch.empty((0, 4), dtype=dtype, device="cuda"), -1),
                                   torch.empty((0,), dtype=dtype, device="cuda"), rtol=0, atol=0)
        s = randn((), dtype)  # 0-d: dim may be 0 or -1, as in torch
        for dim in [None, 0, -1]:
            check("sum", flashkernel.reduce_sum(s, dim), s, dim, "0-d sum")
            check("max", flashkernel.reduce_max(s, dim), s, dim, "0-d max")


@gpu
def test_max_of_empty_raises():
    with pytest.raises(ValueError, match="argument 'x' is empty"):
        flashkernel.reduce_max(torch.empty(0, device="cuda"))
    with pytest.raises(ValueError, match="empty last dimension"):
        flashkernel.reduce_max(torch.empty((3, 0), device="cuda"), -1)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates(dtype):
    for n in [7, 5000, (1 << 20) + 3]:
        x = randn(n, dtype)
        x[n // 3] = float("nan")
        assert torch.isnan(flashkernel.reduce_max(x)) and torch.isnan(flashkernel.reduce_sum(x))
    m = randn((6, 300), dtype)
    m[2, 17] = float("nan")
    check("max", flashkernel.reduce_max(m, -1), m, -1, "max rows with NaN")
    assert torch.isnan(flashkernel.reduce_sum(m, -1)[2]) and not torch.isnan(flashkernel.reduce_sum(m, -1)[3])


@gpu
@pytest.mark.parametrize("impls", [CUDA_IMPLS, TRITON_IMPLS], ids=["cuda", "triton"])
def test_bit_identical_across_runs(impls):
    for shape, dim in [(((1 << 24) + 5,), None), ((4096, 4096), -1), ((65536, 128), -1)]:
        x = randn(shape, torch.float16)
        for op in ["sum", "max"]:
            first = impls[op](x, dim)
            for _ in range(10):
                assert torch.equal(impls[op](x, dim).view(torch.int16), first.view(torch.int16)), f"{op} {shape}"


@gpu
@pytest.mark.parametrize("op", ["sum", "max"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_and_triton_agree(op, dtype):
    for shape, dim in [(((1 << 22) + 9,), None), ((512, 2048), -1), ((1000, 127), -1), ((3, 70000), -1)]:
        x = randn(shape, dtype)
        a, b = CUDA_IMPLS[op](x, dim), TRITON_IMPLS[op](x, dim)
        if op == "max":
            assert torch.equal(a, b), f"{shape}"
        else:
            # Both accumulate in fp32, in different orders: each is within the reference's bound,
            # so they differ by at most twice it.
            check(op, a, x, dim, "cuda")
            check(op, b, x, dim, "triton")
            assert ((a.double() - b.double()).abs() <= 2 * sum_tolerance(x, dim)).all(), f"{shape}"


@gpu
@pytest.mark.exclusive_gpu
def test_more_than_2_pow_31_elements():
    free, _ = torch.cuda.mem_get_info()
    if free < 16 << 30:
        pytest.skip(f"needs 16 GiB of free GPU memory, {free >> 30} GiB free")
    n = (1 << 31) + 5
    g, seed = fresh_generator("cuda")
    # Values in [0, 2^-16): the fp16 sum (about 2^14) stays finite, every element adds to it.
    x = torch.rand(n, generator=g, dtype=torch.float16, device="cuda").mul_(2.0 ** -16)
    spike = int(torch.randint(1 << 31, n, (1,), generator=g, device="cuda").item())  # past 2^31
    x[spike] = torch.rand((), generator=g, device="cuda") + 1
    chunks = x.split(1 << 28)
    ref_sum = sum(c.double().sum().item() for c in chunks)
    ref_max = max(c.amax().item() for c in chunks)
    got = flashkernel.reduce_sum(x).item()
    assert abs(got - ref_sum) <= 1e-2 * abs(ref_sum), f"seed={seed}: sum {got} vs {ref_sum}"
    assert flashkernel.reduce_max(x).item() == ref_max, f"seed={seed}"
    # Row-wise with row offsets past 2^31: the first 2^31 elements as 65536 rows of 32768.
    rows = x[: 1 << 31].view(1 << 16, 1 << 15)
    out = flashkernel.reduce_sum(rows, -1)
    for r0 in range(0, rows.shape[0], 8192):
        block = rows[r0:r0 + 8192]
        check("sum", out[r0:r0 + 8192], block, -1, f"rows {r0}..")
    del x, rows, chunks


@gpu
def test_bad_inputs_name_the_argument():
    x = randn((4, 8), torch.float32)
    for fn in (flashkernel.reduce_sum, flashkernel.reduce_max):
        with pytest.raises(ValueError, match="argument 'x' must be a CUDA tensor"):
            fn(torch.ones(3))
        with pytest.raises(TypeError, match="argument 'x' has unsupported dtype"):
            fn(x.double())
        with pytest.raises(TypeError, match="argument 'x' has unsupported dtype"):
            fn(torch.ones(3, dtype=torch.int32, device="cuda"))
        with pytest.raises(ValueError, match="argument 'dim' is out of range"):
            fn(x, 2)
        with pytest.raises(ValueError, match="argument 'dim' is out of range"):
            fn(x, -3)
        with pytest.raises(ValueError, match="argument 'dim' must be the last dimension"):
            fn(x, 0)
        with pytest.raises(TypeError, match="argument 'dim' must be an int"):
            fn(x, 1.0)
        with pytest.raises(ValueError, match="argument 'x' must be contiguous"):
            fn(x.t())


def test_cpu_tensor_names_argument():
    with pytest.raises(ValueError, match="argument 'x' must be a CUDA tensor"):
        flashkernel.reduce_sum(torch.ones(3))


@gpu
def test_torch_compile_fullgraph_and_opcheck():
    def f(x):
        return flashkernel.reduce_sum(x, -1) * 2 + flashkernel.reduce_max(x)

    x = randn((64, 300), torch.float16)
    torch.testing.assert_close(torch.compile(f, fullgraph=True)(x), f(x))
    for op in (torch.ops.flashkernel.reduce_sum.default, torch.ops.flashkernel.reduce_max.default):
        torch.library.opcheck(op, (x, -1))
        torch.library.opcheck(op, (x, None))


# ----------------------------------------------------------------------------- Triton twin
TRITON_SHAPES = [(0,), (1,), (31,), (33,), (1023,), (40_000,), (3, 5), (4, 5000), (2, 3, 129), (0, 5), (5, 0)]


@triton_twin
@pytest.mark.parametrize("op", ["sum", "max"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", TRITON_SHAPES, ids=str)
def test_triton_matches_reference(op, dtype, shape):
    x = randn(shape, dtype, device=triton_device())
    for dim in dims_for(shape):
        whole = dim is None or len(shape) == 1
        empty = x.numel() == 0 if whole else (shape[-1] == 0 and x.shape[:-1].numel() > 0)
        if op == "max" and empty:
            with pytest.raises(ValueError, match="argument 'x'"):
                TRITON_IMPLS[op](x, dim)
            continue
        check(op, TRITON_IMPLS[op](x, dim), x, dim, f"triton {op} {shape} dim={dim}")


@triton_twin
@pytest.mark.parametrize("op", ["sum", "max"])
def test_triton_misaligned_and_nan(op):
    dev = triton_device()
    x = randn(1001, torch.float16, device=dev)[1:]
    check(op, TRITON_IMPLS[op](x), x, None, "x[1:]")
    m = randn(3 * 33 + 1, torch.float32, device=dev)[1:].view(3, 33)
    m[1, 5] = float("nan")
    out = TRITON_IMPLS[op](m, -1)
    assert torch.isnan(out[1]) and not torch.isnan(out[0]) and not torch.isnan(out[2])
    assert torch.isnan(TRITON_IMPLS[op](m))


@triton_twin
def test_triton_bad_inputs():
    x = randn((4, 8), torch.float32, device=triton_device())
    for fn in TRITON_IMPLS.values():
        with pytest.raises(TypeError, match="argument 'x' has unsupported dtype"):
            fn(x.double())
        with pytest.raises(ValueError, match="argument 'dim' is out of range"):
            fn(x, 5)
        with pytest.raises(ValueError, match="argument 'dim' must be the last dimension"):
            fn(x, 0)
        with pytest.raises(TypeError, match="argument 'dim' must be an int"):
            fn(x, "1")
        with pytest.raises(ValueError, match="argument 'x' must be contiguous"):
            fn(x.t())
    if not TRITON_INTERPRET:
        with pytest.raises(ValueError, match="argument 'x' must be a CUDA tensor"):
            flashkernel.triton.reduce_sum(torch.ones(3))


@triton_twin
@pytest.mark.skipif(TRITON_INTERPRET, reason="full-size shapes: GPU lane only")
@pytest.mark.parametrize("op", ["sum", "max"])
@pytest.mark.parametrize("shape,dtype", MATRIX)
def test_triton_matrix_gpu(op, shape, dtype):
    check_every_dim(TRITON_IMPLS, op, randn(shape, dtype), "triton ")
    y = randn(shape[-1] * 3 + 1, dtype)[1:]
    check(op, TRITON_IMPLS[op](y), y, None, "triton misaligned")
