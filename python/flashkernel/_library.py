"""Loads the compiled op library (torch.ops.flashkernel.*) once.

The library sits next to this file in an installed wheel; in a source checkout the build tree's
copy is found through FLASHKERNEL_LIB_DIR (scripts/test.sh sets it) or ./build/python/flashkernel.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

import torch

_LIB_NAME = "_flashkernel_ops"
_loaded_from: str | None = None


def _candidates() -> list[Path]:
    here = Path(__file__).resolve().parent
    dirs = []
    if os.environ.get("FLASHKERNEL_LIB_DIR"):
        dirs.append(Path(os.environ["FLASHKERNEL_LIB_DIR"]))
    dirs.append(here)
    dirs.append(here.parent.parent / "build" / "python" / "flashkernel")
    found = []
    for d in dirs:
        found += [Path(p) for p in sorted(glob.glob(str(d / f"{_LIB_NAME}*.so")))]
    return found


def load() -> str:
    """Load the op library if it is not loaded yet; returns the path it came from."""
    global _loaded_from
    if _loaded_from is None:
        candidates = _candidates()
        if not candidates:
            raise ImportError(
                "flashkernel: the compiled op library (_flashkernel_ops.so) was not found. Install the "
                "package with `pip install --no-build-isolation .`, or build with CMake and set "
                "FLASHKERNEL_LIB_DIR to <build>/python/flashkernel."
            )
        torch.ops.load_library(str(candidates[0]))
        _loaded_from = str(candidates[0])
    return _loaded_from


def has_op(name: str) -> bool:
    """Whether the loaded library defines torch.ops.flashkernel.<name> (a build made with
    -DFLASHKERNEL_ONLY_OPS holds only some ops)."""
    load()
    return hasattr(torch.ops.flashkernel, name)


def register_fake(qualname: str):
    """torch.library.register_fake for ops this build has; a no-op decorator for the others, so
    `import flashkernel` works with a partial (FLASHKERNEL_ONLY_OPS) build."""
    def decorator(fn):
        if has_op(qualname.split("::", 1)[1]):
            return torch.library.register_fake(qualname)(fn)
        return fn
    return decorator
