"""Triton twins of the CUDA ops: same signatures and semantics, written in Triton.
They run on the GPU, and on the CPU under TRITON_INTERPRET=1 (how CI checks them)."""
from flashkernel.triton.rope import rope, rope_cache, rope_fused
from flashkernel.triton.reduce import reduce_max, reduce_sum
from flashkernel.triton.vector_add import vector_add
from flashkernel.triton.kv_cache import kv_cache_append, kv_cache_gather, paged_decode_attention, paged_prefill_attention
from flashkernel.triton.gelu_linear import gelu_linear
from flashkernel.triton.attention import flash_attention, flash_attention_varlen
from flashkernel.triton.layernorm import add_layernorm, add_rms_norm

__all__ = ["add_layernorm", "add_rms_norm", "kv_cache_append", "kv_cache_gather", "paged_decode_attention", "paged_prefill_attention", "gelu_linear", "flash_attention", "flash_attention_varlen", "reduce_max", "reduce_sum", "rope", "rope_cache", "rope_fused", "vector_add"]
