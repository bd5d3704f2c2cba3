"""CSV attention_head_dims: see flashkernel.bench.ops.attention_breadth."""
from flashkernel.bench.ops.attention_breadth import head_dims as _op

run = _op.run
count_configs = _op.count_configs
