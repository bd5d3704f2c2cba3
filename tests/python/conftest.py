"""pytest setup: markers, the GPU skip rule, and the Triton-interpreter lane.

Two lanes run the same files:
  * normal: CUDA tests and Triton twins run on a GPU and skip with a reason without one;
  * TRITON_INTERPRET=1 -m triton: only Triton-twin tests, on CPU tensors, small shapes.
"""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Plain `pytest tests/python` from a checkout: the package comes from python/ (also for the child
# interpreters some tests start), and the op library from FLASHKERNEL_LIB_DIR or, unset, from
# build/python/flashkernel, where scripts/test.sh builds it (flashkernel._library looks there).
_PYTHON_SRC = str(Path(__file__).resolve().parents[2] / "python")
if _PYTHON_SRC not in sys.path:
    sys.path.insert(0, _PYTHON_SRC)
if _PYTHON_SRC not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_PYTHON_SRC, os.environ.get("PYTHONPATH")) if p)

TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# The autotuned Triton twins run one fixed configuration per problem family here instead of
# autotuning (which compiles and times every configuration for every new tuning key); every
# configuration is tested explicitly (test_triton_every_config in their test files). Set
# FLASHKERNEL_TRITON_AUTOTUNE=1 to run the suite with autotuning.
os.environ.setdefault("FLASHKERNEL_TRITON_AUTOTUNE", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped with a reason without one)")
    config.addinivalue_line("markers", "triton: a Triton-twin test; also runs under TRITON_INTERPRET=1 on the CPU")
    # scripts/gpu_check.sh runs the Python GPU lane as several pytest processes on one GPU; a test
    # that needs most of its memory would find it held by the others (and skip), so the check runs
    # these in a pass of their own after the shards.
    config.addinivalue_line("markers", "exclusive_gpu: needs most of the GPU's memory; run alone, after the shards")


def pytest_collection_modifyitems(config, items):
    import torch

    has_cuda = torch.cuda.is_available()
    skip_gpu = pytest.mark.skip(reason="no CUDA device visible: GPU test skipped")
    skip_interp = pytest.mark.skip(reason="TRITON_INTERPRET=1 lane runs only Triton-twin tests")
    for item in items:
        if TRITON_INTERPRET and "triton" not in item.keywords:
            item.add_marker(skip_interp)
        elif ("gpu" in item.keywords or ("triton" in item.keywords and not TRITON_INTERPRET)) and not has_cuda:
            item.add_marker(skip_gpu)
    _keep_this_shard(config, items)


def _keep_this_shard(config, items):
    """FK_PYTEST_SHARD=i/n keeps every n-th collected test starting at the i-th (0-based), so n
    pytest processes can share one GPU (scripts/gpu_check.sh): the suite is bound by host-side
    work (reference math, launches, compiles), not by the GPU."""
    shard = os.environ.get("FK_PYTEST_SHARD")
    if not shard:
        return
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise pytest.UsageError(f"FK_PYTEST_SHARD must look like i/n, got {shard!r}") from None
    if not 0 <= index < count:
        raise pytest.UsageError(f"FK_PYTEST_SHARD={shard!r}: need 0 <= i < n")
    kept = [item for position, item in enumerate(items) if position % count == index]
    config.hook.pytest_deselected(items=[item for position, item in enumerate(items) if position % count != index])
    items[:] = kept
