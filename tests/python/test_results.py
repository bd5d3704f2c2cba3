"""The committed benchmark CSVs (bench/results/<gpu>/<op>.csv) and the tables and plots generated
from them: every row is traceable to a commit of this repository, parses under the shared schema,
and the README/docs tables and docs/img/ plots are exactly what scripts/update_results.py makes of
them. CPU only (runs in CI), but for the last test: the harness timing the device, on a GPU."""
import csv
import math
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import load_module

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
SCHEMA = ["op", "impl", "dtype", "config", "median_ms", "tflops", "gbps", "gpu", "torch", "commit"]
NUMERIC = ["median_ms", "tflops", "gbps", "p10_ms", "p90_ms", "runs", "tokens_per_s", "peak_mem_mb"]
CSV_PATHS = sorted(RESULTS.glob("*/*.csv"))




def _update_results():
    return load_module("update_results", ROOT / "scripts" / "update_results.py")


def _harness():
    return load_module("flashkernel_bench_harness", ROOT / "python" / "flashkernel" / "bench" / "harness.py")


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


def test_plots_are_generated_from_the_csvs():
    """docs/img/<gpu>/<op>.svg exists for every CSV (and for nothing else) and holds, byte for byte,
    what update_results.py draws: the drawing is deterministic with the locked matplotlib."""
    ur = _update_results()
    plots = ur.render_plots(ur.load())
    expected = {ROOT / "docs" / "img" / p.parent.name / f"{p.stem}.svg" for p in CSV_PATHS}
    assert set(plots) == expected
    missing = sorted(str(p.relative_to(ROOT)) for p in expected if not p.exists())
    assert not missing, f"no plot for {missing}: run scripts/update_results.py"
    extra = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "img").glob("*/*.svg") if p not in expected)
    assert not extra, f"plots without a CSV {extra}: run scripts/update_results.py"
    mismatch = ur.matplotlib_mismatch()
    if mismatch:
        pytest.skip(f"{mismatch}: the SVGs are compared byte for byte only with the locked version")
    stale = sorted(str(path.relative_to(ROOT)) for path, svg in plots.items() if path.read_text() != svg)
    assert not stale, f"plots {stale} are stale: run scripts/update_results.py"


def test_update_results_check_mode():
    """`update_results.py --check` passes on the committed files (tables and plots)."""
    _need_git_history()
    if _shallow():
        pytest.skip("shallow clone: docs/results.md names commit dates from the history")
    ur = _update_results()
    mismatch = ur.matplotlib_mismatch()
    if mismatch:
        pytest.skip(f"{mismatch}: the SVGs are compared byte for byte only with the locked version")
    assert ur.main(["--check"]) == 0


def test_plot_compares_ours_with_the_baselines_in_the_tables_unit():
    """The plot shows our impl (the ratio column's) and the baselines; a row in another unit (the
    device_copy GB/s reference in a tokens/s table), our other variants and configs without our
    value are left out and named in the caption."""
    ur = _update_results()
    rows = [{"impl": impl, "dtype": "float16", "config": config, "tokens_per_s": tps, "gbps": gbps}
            for impl, config, tps, gbps in [("flashkernel_engine", "batch=1", "200", ""),
                                            ("flashkernel_engine_graph", "batch=1", "210", ""),
                                            ("torch_compile_static", "batch=1", "100", ""),
                                            ("device_copy", "batch=1", "", "4000"),
                                            ("torch_compile_static", "batch=8", "800", "")]]
    table = ur.pivot_data(rows, "flashkernel_engine", "torch_compile_static", None)
    impls, configs, notes = ur.comparison(table)
    assert impls == ["flashkernel_engine", "torch_compile_static"]
    assert configs == [("float16", "batch=1")]
    assert table.ratio(("float16", "batch=1")) == 2.0
    assert notes == ["The number at each flashkernel_engine bar is flashkernel_engine / torch_compile_static, as in the table.",
                     "Left out, measured in another unit than tokens/s: device_copy.",
                     "Other FlashKernel variants, in the table only: flashkernel_engine_graph.",
                     "1 configuration(s) without a flashkernel_engine value, in the table only."]
    svg = ur.bar_chart(table, impls, configs, "title", notes)
    assert svg == ur.bar_chart(table, impls, configs, "title", notes) and svg.startswith("<?xml")


def test_headings_name_the_card_commits_and_torch_versions():
    """Each table's heading says what produced its rows: card, commit(s) and torch version(s), every
    distinct one listed once in the rows' order."""
    ur = _update_results()
    row = {"op": "rope", "impl": "flashkernel_cuda", "gpu": "Some GPU", "commit": "0123456789ab", "torch": "2.11.0"}
    card, source, _ = ur.heading("rope", [row], "some-gpu")
    assert (card, source) == ("Some GPU", "commit 0123456789ab, torch 2.11.0")
    rows = [row, dict(row, torch="2.10.0+cu128"), dict(row, commit="deadbeef"), dict(row, torch="")]
    assert ur.heading("rope", rows, "some-gpu")[1] == "commit 0123456789ab, deadbeef, torch 2.11.0, 2.10.0+cu128, unknown"


def test_generated_headings_carry_the_torch_version():
    """The committed tables: every heading of README.md's summary and docs/results.md names the torch
    version(s) of its CSV."""
    ur = _update_results()
    readme, results = (ROOT / "README.md").read_text(), (ROOT / "docs" / "results.md").read_text()
    for (gpu, op), rows in ur.load().items():
        torches = ", ".join(dict.fromkeys(r["torch"] for r in rows))
        card = rows[0]["gpu"]
        assert f"#### {op} on {card} (commit " in readme and f"## {op} on {card} (commit " in results, (gpu, op)
        assert f"torch {torches})" in readme.split(f"#### {op} on {card} (", 1)[1].split("\n", 1)[0], (gpu, op)
        assert f"torch {torches}, {len(rows)} rows)" in results.split(f"## {op} on {card} (", 1)[1].split("\n", 1)[0]


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
    # A commit file next to the .git: the same commit is fine, another one is refused (a copied tree
    # with a stale .git once labelled a whole benchmark run with the wrong commit).
    (tmp_path / harness.COMMIT_FILE).write_text(sha[:7] + "\n")
    assert harness.git_commit(tmp_path) == sha + "-dirty"
    (tmp_path / harness.COMMIT_FILE).write_text("0123456789ab\n")
    with pytest.raises(harness.CommitUnknownError, match="names two commits"):
        harness.git_commit(tmp_path)
    monkeypatch.setenv("FLASHKERNEL_COMMIT", "0123456789ab")
    assert harness.git_commit(tmp_path) == "0123456789ab"


def _git_in(path, *args):
    return subprocess.run(["git", *args], cwd=path, capture_output=True, text=True, check=True).stdout.strip()


def test_t4_estimate_scales_the_measured_fraction_of_copy_bandwidth():
    """A row at 80% of its card's copy bandwidth moving 240 MB is estimated at 240 MB / (300 GB/s * 0.8)
    = 1 ms on a T4; a latency-bound row (below half the copy bandwidth) and an op without an sm_75
    kernel get no estimate."""
    ur = _update_results()
    row = {"dtype": "float16", "gpu": "Card X", "median_ms": "0.1", "tflops": ""}
    tables = {
        ("card-x", "reduce"): [
            dict(row, impl="device_copy", config="n=1", gbps="3000"),
            dict(row, impl="flashkernel_cuda", config="n=100000000 op=sum", gbps="2400"),  # 240 MB
            dict(row, impl="flashkernel_cuda", config="n=1000000 op=sum", gbps="100"),  # latency-bound
        ],
        ("card-x", "attention"): [dict(row, impl="flashkernel_cuda", config="B=1 H=1 N=1024 d=64 x", gbps="2900")],
    }
    text = ur.t4_estimates(tables)
    lines = [line for line in text.splitlines() if line.startswith("| reduce") or line.startswith("| attention")]
    assert lines == ["| reduce | float16 | n=100000000 op=sum | 240.0 | Card X | 0.1000 | 0.80 | 1.000 |"]


@pytest.mark.gpu
def test_harness_times_the_device_not_the_host(tmp_path):
    """A call whose host cost (here 200 us of Python before a tiny kernel) dwarfs its GPU time:
    the CUDA-event median must time the kernel, not the host, and host_us must report the host.
    Without the harness's head start the median would be >= 200 us."""
    import torch
    harness = _harness()
    ctx = harness.BenchContext(out_dir=tmp_path, quick=True)
    x = torch.zeros(1, device="cuda")

    def slow_host_tiny_kernel(t):
        deadline = time.perf_counter() + 200e-6
        while time.perf_counter() < deadline:
            pass
        t.add_(1)

    timing = ctx.time(slow_host_tiny_kernel, [(x,)])
    assert timing.host_us is not None and timing.host_us >= 200, timing
    assert timing.median_ms * 1e3 < 100, f"median {timing.median_ms * 1e3:.1f} us times the host: {timing}"
    assert x.item() > 0


@pytest.mark.gpu
def test_alternate_times_each_impl_in_turn(tmp_path):
    """BenchContext.alternate: every round times each implementation once, in the given order (so
    the calls come in blocks a, b, a, b, ...), and records one row per implementation with the
    median over the rounds."""
    import torch
    harness = _harness()
    ctx = harness.BenchContext(out_dir=tmp_path, quick=True)
    x = torch.zeros(1, device="cuda")
    calls = []

    def short(t):
        calls.append("short")
        torch.cuda._sleep(1_000)
        t.add_(1)

    def long(t):
        calls.append("long")
        torch.cuda._sleep(200_000)  # ~0.1 ms at Hopper clocks
        t.add_(1)

    ms = ctx.alternate("op", {"short": short, "long": long}, [(x,)], "float32", "n=1", rounds=3)
    blocks = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    assert blocks == ["short", "long"] * 3
    assert ms["long"] > 2 * ms["short"], ms
    assert [r["impl"] for r in ctx.rows] == ["short", "long"]
    assert all(r["config"] == "n=1 rounds=3" and r["runs"] == 3 for r in ctx.rows)
