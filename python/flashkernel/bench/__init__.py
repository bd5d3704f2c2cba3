"""Benchmark suite: `flashkernel bench [op ...]` (or `python -m flashkernel bench`).

BENCHMARKS maps a CSV name to the module that produces it; each module has `run(ctx, quick)`.
"""
BENCHMARKS = {
    "reduce": "flashkernel.bench.ops.reduce",
    "vector_add": "flashkernel.bench.ops.vector_add",
    "kv_cache": "flashkernel.bench.ops.kv_cache",
    "gelu_linear": "flashkernel.bench.ops.gelu_linear",
    "attention": "flashkernel.bench.ops.attention",
    "attention_head_dims": "flashkernel.bench.ops.attention_head_dims",
    "attention_varlen": "flashkernel.bench.ops.attention_varlen",
    "rope": "flashkernel.bench.ops.rope",
    "layernorm": "flashkernel.bench.ops.layernorm",
    "e2e_gpt2": "flashkernel.bench.ops.e2e_gpt2",
    "e2e_gpt2_turns": "flashkernel.bench.ops.e2e_gpt2_turns",
}
