"""Build-time metadata for the wheel (a scikit-build-core dynamic-metadata provider).

The op library is compiled against the headers of the torch installed in the build environment
(builds run with --no-build-isolation), and torch's C++ ABI is not stable across releases, so the
wheel pins exactly that torch instead of claiming a range it was never built for. The package also
records the full torch version (local part included) at build time and refuses to load under
another one (python/flashkernel/_library.py).
"""
from __future__ import annotations

from importlib import metadata
from typing import Any, Mapping


def _built_torch_requirement() -> str:
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        raise RuntimeError(
            "flashkernel is compiled against the installed torch: install torch first, then build "
            "with `pip install --no-build-isolation .`") from None
    return f"torch=={version}"


def dynamic_metadata(settings: Mapping[str, Any], project: Mapping[str, Any]) -> dict[str, Any]:
    # `requires`: the other run-time dependencies, listed in pyproject.toml next to this provider.
    others = list(settings.get("requires", []))
    return {"dependencies": [_built_torch_requirement(), *others]}


def dynamic_wheel(settings: Mapping[str, Any]) -> dict[str, bool]:
    # An sdist cannot know which torch its wheel will be built against.
    return {"dependencies": True}
