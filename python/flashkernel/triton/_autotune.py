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


class TunedLauncher:
    """Launches an autotuned kernel: through triton.autotune the first time a tuning key is seen,
    then the configuration it chose, straight through the kernel. Triton's Autotuner.run rebuilds
    its key from every argument on each call; on an H100 that layer cost about as much host time
    as the launch itself (66 vs 33 us per flash_attention call), which is what a small problem
    measures (DEVELOPMENT_LOG.md). `key` must hold everything the autotuner's key holds (the
    tensors' dtypes included) plus the device, so one chosen configuration serves only calls the
    autotuner would have answered the same way."""

    def __init__(self, tuned):
        self._tuned = tuned
        self._kernel = tuned.fn
        self._chosen = {}

    def __call__(self, key, grid, *args, **kwargs):
        """grid(meta) -> launch grid, as for triton.autotune; kwargs are the kernel's other
        (constexpr) arguments."""
        meta = self._chosen.get(key)
        if meta is None:
            self._tuned[grid](*args, **kwargs)
            self._chosen[key] = self._tuned.best_config.all_kwargs()
        else:
            self._kernel[grid(meta)](*args, **kwargs, **meta)
