"""FlashKernel: fused transformer-inference kernels for NVIDIA GPUs.

    import flashkernel
    out = flashkernel.vector_add(a, b)          # CUDA op (torch.ops.flashkernel.vector_add)
    out = flashkernel.triton.vector_add(a, b)   # its Triton twin
"""
import sys

from flashkernel import _library

try:
    _library.load()
except ImportError as _e:
    # `python -m flashkernel ...`: Python imports this package while it locates __main__, with
    # sys.argv[0] set to "-m"; a command line gets the one-line reason, not a traceback.
    if sys.argv[:1] == ["-m"]:
        sys.exit(str(_e))
    raise

from flashkernel.ops.vector_add import DeviceInfo, device_info, vector_add  # noqa: E402
from flashkernel.ops.gelu_linear import gelu_linear  # noqa: E402
from flashkernel.ops.attention import flash_attention, flash_attention_varlen  # noqa: E402
from flashkernel.ops.reduce import reduce_max, reduce_sum  # noqa: E402
from flashkernel.ops.rope import rope, rope_cache, rope_fused  # noqa: E402
from flashkernel.ops.kv_cache import OutOfPagesError, PagedKVCache, kv_cache_append, kv_cache_gather, paged_decode_attention, paged_prefill_attention  # noqa: E402

from flashkernel.ops.layernorm import add_layernorm, add_rms_norm  # noqa: E402
from flashkernel import models  # noqa: E402
from flashkernel import nn  # noqa: E402

__version__ = "1.0.0"

__all__ = ["add_layernorm", "add_rms_norm", "models", "nn", "OutOfPagesError", "PagedKVCache", "kv_cache_append", "kv_cache_gather", "paged_decode_attention", "paged_prefill_attention", "gelu_linear", "flash_attention", "flash_attention_varlen", "reduce_max", "reduce_sum", "rope", "rope_cache", "rope_fused", "DeviceInfo", "device_info", "vector_add", "__version__"]
