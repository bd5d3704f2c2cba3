"""The committed benchmark CSVs (bench/results/<gpu>/<op>.csv) and the tables generated from them:
every row is traceable to a commit of this repository, parses under the shared schema, and the
README/docs tables are exactly what scripts/update_results.py makes of them. CPU only (runs in CI)."""
import csv
import importlib.util
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SCHEMA = ["op", "impl", "dtype", "config", "median_ms", "tflops", "gbps", "gpu", "torch", "commit"]
NUMERIC = ["median_ms", "tflops", "gbps", "p10_ms", "p90_ms", "runs", "tokens_per_s", "peak_mem_mb"]
CSV_PATHS = sorted(RESULTS.glob("*/*.csv"))


def _load(name, path):
    """A module by file path: these checks need neither the compiled library nor the package."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def _update_results():
    return _load("update_results", ROOT / "scripts" / "update_results.py")


def _harness():
    return _load("flashkernel_bench_harness", ROOT / "python" / "flashkernel" / "bench" / "harness.py")


def _git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def _need_git_history():
    """These checks read the repository's history: they need git and a checkout, as in CI."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout (the history names the commits)")


def _shallow() -> bool:
    return _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames or [], list(reader)


def test_results_exist():
    assert CSV_PATHS, f"no benchmark CSVs under {RESULTS}"


@pytest.mark.parametrize("path", CSV_PATHS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_csv_schema_and_stamps(path):
    header, rows = _rows(path)
    missing = [c for c in SCHEMA if c not in header]
    assert not missing, f"{path.name}: missing columns {missing}"
    assert rows, f"{path.name}: no rows"
    for line, r in enumerate(rows, start=2):
        where = f"{path.parent.name}/{path.name} line {line}"
        assert r["op"] == path.stem, f"{where}: op {r['op']!r} in {path.stem}.csv"
        for col in ("impl", "dtype", "config", "gpu", "torch", "commit"):
            assert (r[col] or "").strip(), f"{where}: empty {col}"
        assert r["commit"] != "unknown" and not r["commit"].endswith("-dirty"), f"{where}: commit {r['commit']!r}"
        for col in NUMERIC:
            value = (r.get(col) or "").strip()
            if value:
                assert math.isfinite(float(value)) and float(value) >= 0, f"{where}: {col}={value!r}"
        for token in r["config"].split():
            key, sep, value = token.partition("=")
            assert sep and key and value, f"{where}: config token {token!r} is not key=value"
        # The folder is named after the card that produced the rows.
        assert _harness().gpu_slug(r["gpu"]) == path.parent.name, f"{where}: gpu {r['gpu']!r} in {path.parent.name}/"


@pytest.mark.parametrize("path", CSV_PATHS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_commit_is_in_the_history(path):
    _need_git_history()
    _, rows = _rows(path)
    for commit in sorted({r["commit"] for r in rows}):
        found = _git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0
        if not found and _shallow():
            pytest.skip(f"shallow clone: commit {commit} of {path.name} is outside the fetched history")
        assert found, f"{path.parent.name}/{path.name}: commit {commit} is not a commit of this repository"


def test_tables_are_generated_from_the_csvs():
    """README.md and docs/results.md hold exactly what update_results.py generates (a hand edit or a
    CSV committed without regenerating fails here)."""
    ur = _update_results()
    tables = ur.load()
    assert not ur.untraceable_rows(tables)
    results_md, readme = ur.render(tables, (ROOT / "README.md").read_text())
    assert (ROOT / "README.md").read_text() == readme, "README.md tables are stale: run scripts/update_results.py"
    _need_git_history()
    if _shallow():
        pytest.skip("shallow clone: docs/results.md names commit dates from the history")
    assert (ROOT / "docs" / "results.md").read_text() == results_md, \
        "docs/results.md is stale: run scripts/update_results.py"


def test_update_results_refuses_untraceable_rows(tmp_path):
    ur = _update_results()
    folder = tmp_path / "some-gpu"
    folder.mkdir()
    header = ",".join(SCHEMA)
    good = "rope,flashkernel_cuda,float16,B=1 N=8,0.01,,1.0,Some GPU,2.11.0,0123456789ab"
    (folder / "rope.csv").write_text("\n".join([header, good, good.replace("0123456789ab", "unknown"),
                                                 good.replace("0123456789ab", "0123456789ab-dirty")]) + "\n")
    bad = ur.untraceable_rows(ur.load(tmp_path))
    assert bad == ["some-gpu/rope.csv line 3: commit 'unknown'",
                   "some-gpu/rope.csv line 4: commit '0123456789ab-dirty'"]


def test_harness_refuses_to_guess_the_commit(tmp_path, monkeypatch):
    harness = _harness()
    monkeypatch.delenv("FLASHKERNEL_COMMIT", raising=False)
    with pytest.raises(harness.CommitUnknownError, match="FLASHKERNEL_COMMIT"):
        harness.git_commit(tmp_path)  # no .git, no commit file
    (tmp_path / harness.COMMIT_FILE).write_text("not a sha\n")
    with pytest.raises(harness.CommitUnknownError, match="does not hold a commit id"):
        harness.git_commit(tmp_path)
    (tmp_path / harness.COMMIT_FILE).write_text("0123456789ab\n")
    assert harness.git_commit(tmp_path) == "0123456789ab"
    monkeypatch.setenv("FLASHKERNEL_COMMIT", "deadbeef")
    assert harness.git_commit(tmp_path) == "deadbeef"
    monkeypatch.setenv("FLASHKERNEL_COMMIT", "unknown")
    with pytest.raises(harness.CommitUnknownError, match="not a commit id"):
        harness.git_commit(tmp_path)


def test_harness_stamps_a_dirty_checkout(tmp_path, monkeypatch):
    harness = _harness()
    if shutil.which("git") is None:
        pytest.skip("needs git")

    monkeypatch.delenv("FLASHKERNEL_COMMIT", raising=False)
    def run(*a):
        return subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    run("init", "-q")
    (tmp_path / "f.txt").write_text("1\n")
    run("add", "f.txt")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    sha = _git_in(tmp_path, "rev-parse", "--short=12", "HEAD")
    assert harness.git_commit(tmp_path) == sha
    (tmp_path / "f.txt").write_text("2\n")
    assert harness.git_commit(tmp_path) == sha + "-dirty"


def _git_in(path, *args):
    return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True).stdout.strip()
