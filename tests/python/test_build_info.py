"""The op library is compiled against one exact torch: the package records which at build time
(CMake writes _build_info.json next to the library), refuses to load it under another torch with a
message naming both versions, and the wheel pins that torch. All of it runs on the CPU."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import flashkernel  # noqa: F401  (loads the real library first)
from flashkernel import _library

REPO = Path(__file__).resolve().parents[2]


def fake_build(tmp_path, torch_version):
    """A build directory whose op library is a stand-in and whose record says `torch_version`."""
    lib = tmp_path / "_flashkernel_ops.so"
    lib.write_bytes(b"not a real library: loading it would fail, the version check must come first")
    if torch_version is not None:
        (tmp_path / "_build_info.json").write_text(json.dumps({"torch": torch_version}))
    return lib


def load_from(monkeypatch, lib):
    monkeypatch.setattr(_library, "_loaded_from", None)
    monkeypatch.setattr(_library, "_candidates", lambda: [lib])
    return _library.load()


def test_loaded_library_matches_installed_torch():
    loaded = _library.load()
    assert _library.built_torch_version(loaded) == torch.__version__


def test_mismatching_torch_refuses_to_load_and_names_both_versions(tmp_path, monkeypatch):
    lib = fake_build(tmp_path, "1.13.1+cu117")
    with pytest.raises(ImportError) as info:
        load_from(monkeypatch, lib)
    assert isinstance(info.value, _library.TorchVersionMismatchError)
    message = str(info.value)
    assert "1.13.1+cu117" in message and torch.__version__ in message
    assert "rebuild" in message


def test_other_cuda_variant_of_the_same_release_is_a_mismatch(tmp_path, monkeypatch):
    release = torch.__version__.split("+")[0]
    other = release + ("+cu999" if "+cu999" not in torch.__version__ else "+cpu")
    with pytest.raises(_library.TorchVersionMismatchError):
        load_from(monkeypatch, fake_build(tmp_path, other))


def test_missing_build_record_refuses_to_load(tmp_path, monkeypatch):
    with pytest.raises(ImportError, match="_build_info.json is missing"):
        load_from(monkeypatch, fake_build(tmp_path, None))


def test_unreadable_build_record_refuses_to_load(tmp_path, monkeypatch):
    lib = fake_build(tmp_path, None)
    (tmp_path / "_build_info.json").write_text("{not json")
    with pytest.raises(ImportError, match="cannot read the torch version"):
        load_from(monkeypatch, lib)


def test_matching_record_passes_the_check(tmp_path):
    _library.check_torch_version(fake_build(tmp_path, torch.__version__))


def test_wheel_metadata_pins_the_build_torch(tmp_path):
    """The wheel's Requires-Dist pins the torch the build sees, not a range."""
    pytest.importorskip("scikit_build_core")
    from importlib import metadata

    script = textwrap.dedent(f"""
        import os, sys
        os.chdir({str(REPO)!r})
        from scikit_build_core import build
        name = build.prepare_metadata_for_build_wheel({str(tmp_path)!r})
        print(open(os.path.join({str(tmp_path)!r}, name, "METADATA")).read())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    requires = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Requires-Dist:")]
    assert f"torch=={metadata.version('torch')}" in requires
    assert not any(r.startswith("torch") and "==" not in r for r in requires)
