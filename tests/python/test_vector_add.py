"""vector_add through torch.ops.flashkernel and its Triton twin: values, every dtype, odd and empty
sizes, argument errors, torch.compile."""
import pytest
import torch

import flashkernel
import flashkernel.triton
from helpers import gpu, poisoned, randn, rounding_rtol, triton_device, triton_twin

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SIZES = [0, 1, 7, 127, 1000, 4099, (1 << 20) + 3]


def reference(a, b):
    return (a.double() + b.double()).to(a.dtype)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_vector_add_matches_reference(n, dtype):
    a, b = randn(n, dtype), randn(n, dtype)
    out = flashkernel.vector_add(a, b)
    assert out.shape == a.shape and out.dtype == dtype and out.is_cuda
    torch.testing.assert_close(out, reference(a, b), rtol=rounding_rtol(dtype), atol=0)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_add_multidim_and_misaligned(dtype):
    a, b = randn((3, 5, 7), dtype), randn((3, 5, 7), dtype)
    torch.testing.assert_close(flashkernel.vector_add(a, b), reference(a, b), rtol=rounding_rtol(dtype), atol=0)
    big_a, big_b = randn(1001, dtype), randn(1001, dtype)
    a1, b1 = big_a[1:], big_b[1:]  # contiguous but 2 or 4 bytes off 16-byte alignment
    torch.testing.assert_close(flashkernel.vector_add(a1, b1), reference(a1, b1), rtol=rounding_rtol(dtype), atol=0)


@gpu
def test_vector_add_writes_every_element():
    # The op allocates its own output; check via out= semantics of the C++ path indirectly by
    # comparing against a poisoned buffer copied into: no NaN may survive.
    a, b = randn(4099, torch.float16), randn(4099, torch.float16)
    out = poisoned(4099, torch.float16)
    out.copy_(flashkernel.vector_add(a, b))
    assert not torch.isnan(out).any()


@gpu
def test_vector_add_torch_compile_fullgraph():
    def f(a, b):
        return flashkernel.vector_add(a, b) * 2 + 1

    compiled = torch.compile(f, fullgraph=True)
    a, b = randn(1000, torch.float32), randn(1000, torch.float32)
    torch.testing.assert_close(compiled(a, b), f(a, b))


@gpu
def test_vector_add_opcheck():
    a, b = randn(77, torch.float16), randn(77, torch.float16)
    torch.library.opcheck(torch.ops.flashkernel.vector_add.default, (a, b))


def test_vector_add_cpu_tensor_names_argument():
    with pytest.raises(ValueError, match="argument 'a' must be a CUDA tensor"):
        flashkernel.vector_add(torch.ones(3), torch.ones(3))


@gpu
def test_vector_add_bad_inputs_name_the_argument():
    a = randn(8, torch.float32)
    with pytest.raises(ValueError, match="argument 'b' must be a CUDA tensor"):
        flashkernel.vector_add(a, torch.ones(8))
    with pytest.raises(ValueError, match="same shape"):
        flashkernel.vector_add(a, randn(9, torch.float32))
    with pytest.raises(TypeError, match="same dtype"):
        flashkernel.vector_add(a, randn(8, torch.float16))
    with pytest.raises(TypeError, match="unsupported dtype"):
        flashkernel.vector_add(a.double(), a.double())
    m = randn((8, 8), torch.float32)
    with pytest.raises(ValueError, match="argument 'a' must be contiguous"):
        flashkernel.vector_add(m.t(), m)


@gpu
def test_device_info_reports_the_gpu():
    info = flashkernel.device_info()
    props = torch.cuda.get_device_properties(0)
    assert info.name == props.name
    assert info.compute_capability == (props.major, props.minor)
    assert info.sm_count == props.multi_processor_count
    assert info.total_memory_bytes == props.total_memory
    assert info.l2_cache_bytes > 0 and info.peak_sm_clock_khz > 0
    assert info.peak_memory_bandwidth_gbps > 100


def test_device_info_bad_index():
    with pytest.raises(ValueError, match="argument 'device'"):
        flashkernel.device_info(1000)


@triton_twin
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 127, 5000])
def test_triton_vector_add(n, dtype):
    a, b = randn(n, dtype, device=triton_device()), randn(n, dtype, device=triton_device())
    out = flashkernel.triton.vector_add(a, b)
    torch.testing.assert_close(out, reference(a, b), rtol=rounding_rtol(dtype), atol=0)


@triton_twin
def test_triton_vector_add_bad_inputs():
    a = randn(8, torch.float32, device=triton_device())
    with pytest.raises(ValueError, match="same shape"):
        flashkernel.triton.vector_add(a, a[:4])
    with pytest.raises(TypeError, match="same dtype"):
        flashkernel.triton.vector_add(a, a.half())
