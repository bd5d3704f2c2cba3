"""FlashKernel: fused transformer-inference kernels for NVIDIA GPUs.

    import flashkernel
    out = flashkernel.vector_add(a, b)          # CUDA op (torch.ops.flashkernel.vector_add)
    out = flashkernel.triton.vector_add(a, b)   # its Triton twin
"""
from flashkernel import _library

_library.load()

from flashkernel.ops.stub import DeviceInfo, device_info, vector_add  # noqa: E402
from flashkernel.ops.attention import flash_attention  # noqa: E402
from flashkernel.ops.gelu_linear import gelu_linear  # noqa: E402
from flashkernel.ops.reduce import reduce_max, reduce_sum  # noqa: E402

__version__ = "1.0.0"

__all__ = ["flash_attention", "gelu_linear", "reduce_max", "reduce_sum", "DeviceInfo", "device_info", "vector_add", "__version__"]
