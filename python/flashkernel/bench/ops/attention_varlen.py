"""CSV attention_varlen: see flashkernel.bench.ops.attention_breadth."""
from flashkernel.bench.ops.attention_breadth import varlen as _op

run = _op.run
count_configs = _op.count_configs
