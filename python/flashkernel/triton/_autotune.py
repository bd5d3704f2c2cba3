"""The autotuning switch of the Triton twins.

Autotuning compiles and times every configuration of a twin for every new tuning key (size bucket,
dtype, flags). That is what benchmarks want, and the default. With FLASHKERNEL_TRITON_AUTOTUNE=0
each autotuned twin instead launches one fixed, known-good configuration per problem family: the
test suite sets it (tests/python/conftest.py), where tuning dominated the run time, and runs every
configuration of every list explicitly in dedicated tests instead. `flashkernel bench` always
autotunes.
"""
from __future__ import annotations

import os

ENV = "FLASHKERNEL_TRITON_AUTOTUNE"


def autotune_enabled() -> bool:
    """False only when FLASHKERNEL_TRITON_AUTOTUNE is "0" (read at every call, so it can change)."""
    return os.environ.get(ENV, "1").strip() != "0"
