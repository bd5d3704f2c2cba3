"""The package version, for `flashkernel --version` and `flashkernel info`.

pyproject.toml is the one place the version is written. A source checkout (python/flashkernel with
the project's pyproject.toml two levels up) reads it from there, so a stale installed copy of the
package cannot lend its version to the checkout's code; an installed package reads its
distribution metadata (importlib.metadata).
"""
from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parent.parent.parent / "pyproject.toml"


def checkout_version(pyproject: Path = _PYPROJECT) -> str | None:
    """The static [project] version in the checkout's pyproject.toml; None when there is no
    pyproject.toml of the flashkernel project there, or it gives no static version."""
    try:
        text = pyproject.read_text()
    except OSError:
        return None
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # Python 3.10: the [project] table's own name/version lines
        section = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        body = section.group(1) if section else ""
        fields = dict(re.findall(r'^(name|version)\s*=\s*"([^"]*)"', body, re.M))
    else:
        try:
            fields = tomllib.loads(text).get("project", {})
        except tomllib.TOMLDecodeError:
            return None
    if fields.get("name") != "flashkernel" or not isinstance(fields.get("version"), str):
        return None
    return fields["version"]


def version() -> str:
    """The version of the flashkernel code that is running."""
    found = checkout_version()
    if found:
        return found
    try:
        return metadata.version("flashkernel")
    except metadata.PackageNotFoundError:
        from flashkernel import __version__

        return __version__
