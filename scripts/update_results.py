#!/usr/bin/env python3
"""Regenerates the results tables from the committed benchmark CSVs (never typed by hand):
docs/results.md gets every row, README.md (between the results markers) a summary per op.
docs/results.md also says, per table, the commit and date of its rows and whether the op's code
changed after them (git log on its source folders).

    python3 scripts/update_results.py           # rewrite README.md and docs/results.md
    python3 scripts/update_results.py --check   # exit 1 if they differ from what the CSVs give

Rows whose commit is missing, `unknown` or `-dirty` are refused: a published number must name the
committed code that produced it.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

# README summary: per op, our implementation, the baseline its goal is written against, and which
# configs to show (a regex over `config`).
SUMMARY = {
    "vector_add": ("flashkernel_cuda", "device_copy", r"MB=(256|1024)$"),
    "reduce": ("flashkernel_cuda", "torch_eager", r"^n=(1000000|100000000|1000000000) |^rows="),
    "attention": ("flashkernel_cuda", "sdpa_cudnn", r"^B=\d+ H=\d+ N=(1024|4096|16384) d=(64|128) "),
    "gelu_linear": ("flashkernel_cuda", "cublaslt_epilogue", r"."),
    "rope": ("flashkernel_cuda", "torch_compile", r"^B=8 "),
    "layernorm": ("flashkernel", "torch_compile", r"."),
    "kv_cache": ("flashkernel_cuda", "sdpa_contiguous", r"^batch=(16|64) ctx="),
    "e2e_gpt2": ("flashkernel_engine", "torch_compile_static", r"."),
}

# The source folders whose history decides whether an op's rows are older than its code. The
# GPT-2 rows also depend on every kernel the engine calls; only the engine's own folder is
# followed, so a kernel change shows up in that kernel's table.
OP_SOURCES = {
    "vector_add": ("src/stub", "src/vector_add"),
    "reduce": ("src/reduce",),
    "attention": ("src/attention",),
    "gelu_linear": ("src/gelu_linear",),
    "rope": ("src/rope",),
    "layernorm": ("src/layernorm",),
    "kv_cache": ("src/kv_cache",),
    "e2e_gpt2": ("src/models/gpt2",),
}
COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")


class ResultsError(Exception):
    """A committed CSV that cannot be published as it is."""


def metric(row: dict) -> tuple[str, str]:
    if row.get("tokens_per_s"):
        return row["tokens_per_s"], "tokens/s"
    if row.get("tflops"):
        return row["tflops"], "TFLOP/s"
    if row.get("gbps"):
        return row["gbps"], "GB/s"
    return row.get("median_ms", ""), "ms"


def load(results: Path = RESULTS) -> dict[tuple[str, str], list[dict]]:
    tables = {}
    for path in sorted(results.glob("*/*.csv")):
        with open(path, newline="") as f:
            tables[(path.parent.name, path.stem)] = list(csv.DictReader(f))
    return tables


def untraceable_rows(tables: dict[tuple[str, str], list[dict]]) -> list[str]:
    """'gpu/op.csv row N: commit '...'' for every row that does not name a clean commit."""
    bad = []
    for (gpu, op), rows in tables.items():
        for i, r in enumerate(rows, start=2):  # line 1 is the header
            commit = (r.get("commit") or "").strip()
            if not COMMIT_RE.match(commit):
                bad.append(f"{gpu}/{op}.csv line {i}: commit {commit!r}")
    return bad


def git(*args: str) -> str | None:
    """git's stdout in the repository, or None when git or the history cannot answer."""
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(op: str, rows: list[dict]) -> str:
    """One paragraph: the commit(s) and date(s) of the rows, and the later changes to the op's code."""
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r["commit"]] += 1
    parts, stale = [], []
    for commit, n in counts.items():
        date = git("log", "-1", "--format=%cs", f"{commit}^{{commit}}")
        parts.append(f"{n} rows at commit `{commit}` ({date or 'date unknown: commit not in this clone'})")
        sources = OP_SOURCES.get(op, (f"src/{op}",))
        later = git("log", "--format=%h", f"{commit}..HEAD", "--", *sources) if date else None
        if later:
            changes = later.split()
            stale.append(f"rows at `{commit}` are older than {len(changes)} later change(s) to "
                         f"{', '.join(sources)} (newest `{changes[0]}`)")
    text = "Measured: " + "; ".join(parts) + ".\n"
    if stale:
        text += "Older than the code: " + "; ".join(stale) + ".\n"
    else:
        text += f"No change to {', '.join(OP_SOURCES.get(op, (f'src/{op}',)))} since.\n"
    return text


def pivot(rows: list[dict], ours: str, baseline: str, pattern: str | None) -> str:
    impls: list[str] = []
    cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    kept = [r for r in rows if not pattern or re.search(pattern, r["config"])]
    if not kept:
        return "_no rows_\n"
    # The table's unit is that of our rows; a row measured in another unit (e.g. the device_copy
    # bandwidth reference in a tokens/s table) shows its unit in the cell.
    unit = metric(next((r for r in kept if r["impl"] == ours), kept[0]))[1]
    for r in kept:
        if r["impl"] not in impls:
            impls.append(r["impl"])
        value, row_unit = metric(r)
        cells[(r["dtype"], r["config"])][r["impl"]] = value if row_unit == unit or not value else f"{value} {row_unit}"
    ratio = bool(baseline) and ours in impls and baseline in impls
    head = ["dtype", "config"] + impls + ([f"{ours} / {baseline}"] if ratio else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (dtype, config), vals in cells.items():
        row = [dtype, config] + [vals.get(i, "") or "n/a" for i in impls]
        if ratio:
            try:
                if unit == "ms":
                    row.append(f"{float(vals[baseline]) / float(vals[ours]):.2f}x")
                else:
                    row.append(f"{float(vals[ours]) / float(vals[baseline]):.2f}x")
            except (KeyError, ValueError, ZeroDivisionError):
                row.append("")
        lines.append("| " + " | ".join(row) + " |")
    return f"Values in {unit} (higher is better" + (")" if unit != "ms" else "; here lower is better)") + ".\n\n" + "\n".join(lines) + "\n"


def render(tables: dict[tuple[str, str], list[dict]], readme_text: str) -> tuple[str, str]:
    """(docs/results.md, README.md) as the CSVs give them."""
    full = ["# Benchmark results\n", "Generated by `scripts/update_results.py` from `bench/results/<gpu>/<op>.csv`.\n"]
    summary = []
    for (gpu, op), rows in tables.items():
        card = rows[0]["gpu"] if rows else gpu
        commits = ", ".join(dict.fromkeys(r["commit"] for r in rows))
        ours, baseline, pattern = SUMMARY.get(op, ("flashkernel_cuda", "", None))
        full.append(f"\n## {op} on {card} (commit {commits}, {len(rows)} rows)\n\n" + provenance(op, rows) + "\n"
                    + pivot(rows, ours, baseline, None))
        summary.append(f"\n#### {op} on {card} (commit {commits})\n\n" + pivot(rows, ours, baseline, pattern))
    readme = readme_text
    if BEGIN in readme and END in readme:
        pre, rest = readme.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        body = ("\n_Generated from the committed CSVs by `scripts/update_results.py`; every table in "
                "`docs/results.md`._\n" + "".join(summary))
        readme = pre + BEGIN + body + "\n" + END + post
    return "".join(full), readme


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if README.md or docs/results.md differ from the CSVs")
    args = parser.parse_args(argv)
    tables = load()
    bad = untraceable_rows(tables)
    if bad:
        print(f"update_results: {len(bad)} row(s) do not name a clean commit (re-measure them at a "
              "committed tree, or set FLASHKERNEL_COMMIT on a copy without .git):", file=sys.stderr)
        for line in bad[:20]:
            print("  " + line, file=sys.stderr)
        if len(bad) > 20:
            print(f"  ... and {len(bad) - 20} more", file=sys.stderr)
        return 2
    targets = {ROOT / "docs" / "results.md": None, ROOT / "README.md": None}
    results_md, readme = render(tables, (ROOT / "README.md").read_text())
    targets[ROOT / "docs" / "results.md"], targets[ROOT / "README.md"] = results_md, readme
    if args.check:
        stale = 0
        for path, text in targets.items():
            old = path.read_text() if path.exists() else ""
            if old != text:
                stale += 1
                diff = difflib.unified_diff(old.splitlines(), text.splitlines(), str(path.relative_to(ROOT)),
                                            "generated", lineterm="", n=1)
                print("\n".join(list(diff)[:40]), file=sys.stderr)
        if stale:
            print("update_results: tables differ from the CSVs; run python3 scripts/update_results.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in targets.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
