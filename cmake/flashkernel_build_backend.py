"""PEP 517 build backend: scikit-build-core's, behind a check of the build's prerequisites.

The wheel is compiled against the installed torch, so it is built with `pip install
--no-build-isolation .`, and then pip installs nothing for the build: a missing scikit-build-core,
torch, CMake or nvcc would surface as a long traceback from deep inside pip or CMake. This module
checks them first and, when one is missing, stops with one line per problem saying what to install.
Everything else is scikit-build-core's backend, unchanged.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata, util

MIN_SCIKIT_BUILD_CORE = (1, 0)
MIN_CMAKE = (3, 25)
MIN_CUDA = (12, 8)
INSTALL_HINT = "pip install scikit-build-core ninja cmake  (then: pip install --no-build-isolation .)"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def _check_scikit_build_core() -> list[str]:
    try:
        version = metadata.version("scikit-build-core")
    except metadata.PackageNotFoundError:
        return [f"scikit-build-core is not installed: {INSTALL_HINT}"]
    if _version_tuple(version) < MIN_SCIKIT_BUILD_CORE:
        return [f"scikit-build-core {version} is too old (need >= 1.0): pip install -U scikit-build-core"]
    return []


def _check_torch() -> list[str]:
    if util.find_spec("torch") is None:
        return ["torch is not importable by the build: install torch first (pip install torch==2.11.0), then "
                "build with --no-build-isolation (an isolated build environment has no torch to compile against)"]
    return []


def _check_cmake() -> list[str]:
    exe = shutil.which("cmake")
    if exe is None:
        try:
            import cmake  # the PyPI package puts its binary next to its module

            exe = os.path.join(cmake.CMAKE_BIN_DIR, "cmake")
        except (ImportError, AttributeError):
            return ["CMake >= 3.25 not found: pip install cmake (or install it with your system's package manager)"]
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        return [f"{exe} --version failed ({e}): reinstall CMake (>= 3.25)"]
    if _version_tuple(out) < MIN_CMAKE:
        return [f"{exe} is CMake {'.'.join(map(str, _version_tuple(out)))}, need >= 3.25: pip install cmake"]
    return []


def _find_nvcc() -> str | None:
    if os.environ.get("CUDACXX"):
        return os.environ["CUDACXX"]
    exe = shutil.which("nvcc")
    if exe is None and os.access("/usr/local/cuda/bin/nvcc", os.X_OK):
        exe = "/usr/local/cuda/bin/nvcc"
        os.environ["CUDACXX"] = exe  # CMake looks on PATH only; tell it where we found it
    return exe


def _check_nvcc() -> list[str]:
    exe = _find_nvcc()
    if exe is None:
        return ["nvcc (CUDA toolkit >= 12.8) not found: install the CUDA toolkit and put its bin/ on PATH, "
                "or set CUDACXX=/path/to/nvcc"]
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        return [f"{exe} --version failed ({e}): check the CUDA toolkit installation"]
    m = re.search(r"release (\d+)\.(\d+)", out)
    if m is None:
        return [f"cannot read the CUDA version from `{exe} --version`"]
    if (int(m[1]), int(m[2])) < MIN_CUDA:
        return [f"{exe} is CUDA {m[1]}.{m[2]}, need >= 12.8 (the Hopper path uses its sm_90a features)"]
    return []


def _require(*checks) -> None:
    problems = [p for check in checks for p in check()]
    if problems:
        print("flashkernel: cannot build:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        raise SystemExit(1)


def _backend():
    from scikit_build_core import build

    return build


_SDIST_CHECKS = (_check_scikit_build_core,)
_WHEEL_CHECKS = (_check_scikit_build_core, _check_torch, _check_cmake, _check_nvcc)


def _hook(name: str, checks):
    """The PEP 517 hook `name`: runs `checks`, then scikit-build-core's hook of that name."""

    def hook(*args, **kwargs):
        _require(*checks)
        return getattr(_backend(), name)(*args, **kwargs)

    hook.__name__ = hook.__qualname__ = name
    return hook


get_requires_for_build_sdist = _hook("get_requires_for_build_sdist", _SDIST_CHECKS)
build_sdist = _hook("build_sdist", _SDIST_CHECKS)
get_requires_for_build_wheel = _hook("get_requires_for_build_wheel", _WHEEL_CHECKS)
prepare_metadata_for_build_wheel = _hook("prepare_metadata_for_build_wheel", _WHEEL_CHECKS)
build_wheel = _hook("build_wheel", _WHEEL_CHECKS)
get_requires_for_build_editable = _hook("get_requires_for_build_editable", _WHEEL_CHECKS)
prepare_metadata_for_build_editable = _hook("prepare_metadata_for_build_editable", _WHEEL_CHECKS)
build_editable = _hook("build_editable", _WHEEL_CHECKS)
