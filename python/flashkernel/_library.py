"""Loads the compiled op library (torch.ops.flashkernel.*) once.

The library sits next to this file in an installed wheel; in a source checkout the build tree's
copy is found through FLASHKERNEL_LIB_DIR (scripts/test.sh sets it) or ./build/python/flashkernel.
"""
from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import torch

_LIB_NAME = "_flashkernel_ops"
# Written by CMake next to the op library: {"torch": "<torch.__version__ it was compiled against>"}.
_BUILD_INFO = "_build_info.json"
_loaded_from: str | None = None


class TorchVersionMismatchError(ImportError):
    """The op library was compiled against another torch than the one installed."""


def built_torch_version(library: str | os.PathLike) -> str:
    """The torch version the op library at `library` was compiled against (from the build record
    next to it); ImportError when there is no readable record."""
    info = Path(library).with_name(_BUILD_INFO)
    try:
        version = json.loads(info.read_text())["torch"]
    except FileNotFoundError:
        raise ImportError(
            f"flashkernel: {info} is missing, so the torch version {library} was compiled against is "
            "unknown; rebuild flashkernel (a build records it next to the library)."
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ImportError(f"flashkernel: cannot read the torch version from {info}: {e}") from None
    if not isinstance(version, str) or not version:
        raise ImportError(f"flashkernel: {info} records no torch version")
    return version


def check_torch_version(library: str | os.PathLike) -> None:
    """Raise TorchVersionMismatchError unless the installed torch is exactly the one the op library
    was compiled against: torch's C++ ABI differs between releases (and CUDA variants), and a
    mismatch shows up as undefined symbols at load time or as crashes later."""
    built = built_torch_version(library)
    if built != torch.__version__:
        raise TorchVersionMismatchError(
            f"flashkernel: the op library {library} was built against torch {built}, but torch "
            f"{torch.__version__} is installed. Install torch=={built.split('+')[0]} (the {built} build), "
            "or rebuild flashkernel against the installed torch: pip install --no-build-isolation ."
        )


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


def missing_library_message() -> str:
    """One line: the library is not built, and what to run."""
    where = f"FLASHKERNEL_LIB_DIR={os.environ['FLASHKERNEL_LIB_DIR']}, " if os.environ.get("FLASHKERNEL_LIB_DIR") else ""
    return (f"flashkernel: the compiled op library ({_LIB_NAME}*.so) was not found (looked in {where}the "
            "package folder and build/python/flashkernel): run scripts/test.sh in the checkout (builds it into "
            "build/), or pip install --no-build-isolation . (or set FLASHKERNEL_LIB_DIR to <build>/python/flashkernel)")


def load() -> str:
    """Load the op library if it is not loaded yet; returns the path it came from."""
    global _loaded_from
    if _loaded_from is None:
        candidates = _candidates()
        if not candidates:
            raise ImportError(missing_library_message())
        check_torch_version(candidates[0])  # before loading: a mismatched library may not even load
        try:
            torch.ops.load_library(str(candidates[0]))
        except OSError as e:  # e.g. undefined symbols: a library from another (partial or stale) build
            raise ImportError(f"flashkernel: cannot load {candidates[0]}: {e.__cause__ or e}; rebuild it "
                              "(scripts/test.sh, or pip install --no-build-isolation .)") from e
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
