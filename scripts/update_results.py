#!/usr/bin/env python3
"""Regenerates the results tables from the committed benchmark CSVs (never typed by hand):
docs/results.md gets every row, README.md (between the results markers) a summary per op.
Each table names the card, the commit(s) and the torch version(s) of its rows; docs/results.md
also says the date of each commit and whether the op's code changed after it (git log on its
source folders), and shows under each table a bar chart of our implementation against the
baselines, docs/img/<gpu>/<op>.svg (drawn with matplotlib).

    python3 scripts/update_results.py           # rewrite README.md, docs/results.md and docs/img/
    python3 scripts/update_results.py --check   # exit 1 if they differ from what the CSVs give

Rows whose commit is missing, `unknown` or `-dirty` are refused: a published number must name the
committed code that produced it.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import io
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.style
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ROOFLINE = ROOT / "profiling" / "roofline"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

# README summary: per op, our implementation, the baseline its goal is written against, and which
# configs to show (a regex over `config`).
SUMMARY = {
    "vector_add": ("flashkernel_cuda", "device_copy", r"MB=(256|1024)$"),
    "reduce": ("flashkernel_cuda", "torch_eager", r"^n=(1000000|100000000|1000000000) |^rows="),
    "attention": ("flashkernel_cuda", "sdpa_cudnn", r"^B=\d+ H=\d+ N=(1024|4096|16384) d=(64|128) "),
    "attention_head_dims": ("flashkernel_cuda", "sdpa_cudnn", r"N=(4096|8192) d=(96|256) "),
    "attention_varlen": ("flashkernel_cuda", "sdpa_padded", r"."),
    "gelu_linear": ("flashkernel_cuda", "cublaslt_epilogue", r"."),
    "rope": ("flashkernel_cuda", "torch_compile", r"^B=8 "),
    "layernorm": ("flashkernel_cuda", "torch_eager", r"rows=(4096|16384) "),
    "kv_cache": ("flashkernel_cuda", "sdpa_contiguous", r"^batch=(16|64) ctx="),
    "e2e_gpt2": ("flashkernel_engine", "torch_compile_static", r"."),
    "e2e_gpt2_turns": ("flashkernel_engine_continue", "flashkernel_engine_recompute", r"^history="),
}

# The source folders whose history decides whether an op's rows are older than its code. The
# GPT-2 rows also depend on every kernel the engine calls; only the engine's own folder is
# followed, so a kernel change shows up in that kernel's table.
OP_SOURCES = {
    "vector_add": ("src/stub", "src/vector_add"),  # src/stub: the folder's earlier name
    "reduce": ("src/reduce",),
    "attention": ("src/attention",),
    "attention_head_dims": ("src/attention",),
    "attention_varlen": ("src/attention",),
    "gelu_linear": ("src/gelu_linear",),
    "rope": ("src/rope",),
    "layernorm": ("src/layernorm",),
    "kv_cache": ("src/kv_cache",),
    "e2e_gpt2": ("src/models/gpt2",),
    "e2e_gpt2_turns": ("src/models/gpt2",),
}
COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")

# The T4 (sm_75) on paper, until a T4 runs the benchmark (it writes bench/results/tesla-t4/): its
# datasheet bandwidth, and the memory-bound ops whose CUDA kernels are the same source there, with
# the impl of ours to scale. attention and gelu_linear (fp16 on sm_75) are compute-bound there and
# are not estimated by bandwidth.
T4_BANDWIDTH_GBPS = 300.0
# Rows below this fraction of the card's copy bandwidth are bound by latency, not bytes, and get no
# estimate (scaling their time by bandwidth would be meaningless).
T4_MIN_FRACTION = 0.5
T4_OPS = {"vector_add": "flashkernel_cuda", "reduce": "flashkernel_cuda", "rope": "flashkernel_cuda",
          "layernorm": "flashkernel_cuda", "kv_cache": "flashkernel_cuda"}


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


@dataclass
class Pivot:
    """One table: per (dtype, config) and impl a cell (value, that row's unit), in CSV order."""
    unit: str  # the table's unit: that of our rows
    impls: list[str]
    cells: dict[tuple[str, str], dict[str, tuple[str, str]]]
    ours: str
    baseline: str

    @property
    def has_ratio(self) -> bool:
        return bool(self.baseline) and self.ours in self.impls and self.baseline in self.impls

    def number(self, key: tuple[str, str], impl: str) -> float | None:
        """A cell as a number in the table's unit; None when empty or measured in another unit."""
        value, unit = self.cells[key].get(impl, ("", self.unit))
        try:
            return float(value) if unit == self.unit else None
        except ValueError:
            return None

    def ratio(self, key: tuple[str, str]) -> float | None:
        """ours against the baseline, above 1 when ours is better (for ms: baseline time / ours)."""
        a, b = self.number(key, self.ours), self.number(key, self.baseline)
        num, den = (b, a) if self.unit == "ms" else (a, b)
        return num / den if num is not None and den else None


def pivot_data(rows: list[dict], ours: str, baseline: str, pattern: str | None) -> Pivot:
    """The rows whose config matches `pattern` (all rows when it is None) as a Pivot."""
    kept = [r for r in rows if not pattern or re.search(pattern, r["config"])]
    unit = metric(next((r for r in kept if r["impl"] == ours), kept[0]))[1] if kept else ""
    cells: dict[tuple[str, str], dict[str, tuple[str, str]]] = defaultdict(dict)
    for r in kept:
        cells[(r["dtype"], r["config"])][r["impl"]] = metric(r)
    return Pivot(unit, list(dict.fromkeys(r["impl"] for r in kept)), dict(cells), ours, baseline)


def markdown_table(p: Pivot) -> str:
    if not p.cells:
        return "_no rows_\n"
    head = ["dtype", "config"] + p.impls + ([f"{p.ours} / {p.baseline}"] if p.has_ratio else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, vals in p.cells.items():
        row = list(key)
        for impl in p.impls:
            # A row measured in another unit (e.g. the device_copy bandwidth reference in a
            # tokens/s table) shows its unit in the cell.
            value, unit = vals.get(impl, ("", p.unit))
            row.append("n/a" if not value else value if unit == p.unit else f"{value} {unit}")
        if p.has_ratio:
            ratio = p.ratio(key)
            row.append("" if ratio is None else f"{ratio:.2f}x")
        lines.append("| " + " | ".join(row) + " |")
    better = ")" if p.unit != "ms" else "; here lower is better)"
    return f"Values in {p.unit} (higher is better{better}.\n\n" + "\n".join(lines) + "\n"


# The plots: our implementation against every baseline, one SVG per CSV under docs/img/. The style
# ignores any matplotlibrc (matplotlib's defaults, then these): a font matplotlib bundles, glyphs
# drawn as paths, a fixed salt for the SVG's element ids and no date or producer in the metadata,
# so the same CSVs give byte-identical files on every machine with the locked matplotlib
# (requirements-lock.txt; tests/python/test_results.py compares them).
IMG = ROOT / "docs" / "img"
PLOT_RC = {"font.family": "DejaVu Sans", "font.size": 8, "svg.fonttype": "path", "svg.hashsalt": "flashkernel"}
SVG_METADATA = {"Date": None, "Creator": None}
BAR_IN = 0.11  # height of one bar in inches: the figure grows with the number of bars
OURS_PREFIX = "flashkernel"  # impls named so are our own variants, not baselines


def comparison(p: Pivot) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """What a table's plot shows: (impls, configs, notes for its caption). Our impl (that of the
    table's ratio column) against every baseline, for the configs where ours has a value; the notes
    name what the table has and the plot leaves out."""
    if p.ours not in p.impls:
        return [], [], [f"No {p.ours} rows to compare."]
    configs = [key for key in p.cells if p.number(key, p.ours) is not None]
    baselines = [i for i in p.impls if not i.startswith(OURS_PREFIX)]
    impls = [p.ours] + [i for i in baselines if any(p.number(key, i) is not None for key in configs)]
    notes = []
    if p.has_ratio:
        notes.append(f"The number at each {p.ours} bar is {p.ours} / {p.baseline}, as in the table.")
    # Rows in another unit (the device_copy GB/s reference in a tokens/s table) cannot share the axis.
    other_unit = list(dict.fromkeys(impl for vals in p.cells.values() for impl, (value, unit) in vals.items()
                                    if value and unit != p.unit))
    if other_unit:
        notes.append(f"Left out, measured in another unit than {p.unit}: {', '.join(other_unit)}.")
    variants = [i for i in p.impls if i.startswith(OURS_PREFIX) and i != p.ours]
    if variants:
        notes.append(f"Other FlashKernel variants, in the table only: {', '.join(variants)}.")
    if len(configs) < len(p.cells):
        notes.append(f"{len(p.cells) - len(configs)} configuration(s) without a {p.ours} value, in the table only.")
    return impls, configs, notes


def bar_chart(p: Pivot, impls: list[str], configs: list[tuple[str, str]], title: str, notes: list[str]) -> str:
    """A grouped horizontal bar chart as SVG text: one group per configuration, top to bottom in
    the table's order, one bar per impl that has a value there (no empty slots), one colour per impl.
    Horizontal, because the config labels are long and a table has up to ~70 of them."""
    bars: dict[str, tuple[list[float], list[float]]] = {impl: ([], []) for impl in impls}
    ticks, y = [], 0.0
    for key in configs:
        first = y
        for impl in impls:
            value = p.number(key, impl)
            if value is not None:
                bars[impl][0].append(y)
                bars[impl][1].append(value)
                y += 1
        ticks.append((first + y - 1) / 2)
        y += 0.6  # the gap between groups
    values = [v for _, vs in bars.values() for v in vs if v > 0]
    with matplotlib.style.context("default"), matplotlib.rc_context(PLOT_RC):
        title_lines = title.count("\n") + 1  # the second: the rows' commit and torch version
        fig = Figure(figsize=(9, 1.45 + 0.15 * (title_lines + len(notes)) + BAR_IN * y), layout="constrained")
        ax = fig.add_subplot()
        for n, (impl, (ys, vs)) in enumerate(bars.items()):
            drawn = ax.barh(ys, vs, height=0.9, color=f"C{n % 10}", label=impl)
            if impl == p.ours and p.has_ratio:  # ours has a bar in every config shown
                ratios = [p.ratio(key) for key in configs]
                ax.bar_label(drawn, ["" if r is None else f"{r:.2f}x" for r in ratios], padding=2, fontsize=6.5)
        # A log axis only where a linear one would draw the smallest values thinner than a pixel
        # (e.g. the M=1 GEMMs next to the large ones).
        log = bool(values) and max(values) > 1000 * min(values)
        if log:
            ax.set_xscale("log")
        ax.set_yticks(ticks, [f"{dtype} {config}" for dtype, config in configs])
        ax.set_ylim(y - 0.75, -0.85)  # inverted: the first config on top; 0.4 bar of space around
        ax.margins(x=0.08)  # room for the ratio labels
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        better = "lower" if p.unit == "ms" else "higher"
        ax.set_xlabel(f"{p.unit} ({better} is better{', log scale' if log else ''})")
        fig.suptitle(title, fontsize=9)
        if impls:  # above the axes, under the title
            ax.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=min(len(impls), 4), frameon=False)
        if notes:
            fig.supxlabel("\n".join(notes), x=0.01, ha="left", fontsize=7)
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata=SVG_METADATA)
    return out.getvalue()


def heading(op: str, rows: list[dict], gpu: str) -> tuple[str, str, tuple[str, str, str | None]]:
    """(card name, 'commit C, torch T' of the rows, (ours, baseline, README config pattern)) of a
    table; several commits or torch versions are listed in the rows' order."""
    card = rows[0]["gpu"] if rows else gpu
    commits = ", ".join(dict.fromkeys(r["commit"] for r in rows))
    torches = ", ".join(dict.fromkeys((r.get("torch") or "").strip() or "unknown" for r in rows))
    return card, f"commit {commits}, torch {torches}", SUMMARY.get(op, ("flashkernel_cuda", "", None))


def t4_estimates(tables: dict[tuple[str, str], list[dict]]) -> str:
    """A markdown section: for the memory-bound ops' summary configs, the time a T4 would take if
    its kernels reached the same fraction of its bandwidth as they reach of the measured card's
    device-copy bandwidth (the best device_copy row among that card's CSVs)."""
    copy: dict[str, float] = {}
    for (gpu, _), rows in tables.items():
        for r in rows:
            if r["impl"] == "device_copy" and r.get("gbps"):
                copy[gpu] = max(copy.get(gpu, 0.0), float(r["gbps"]))
    lines = []
    for (gpu, op), rows in tables.items():
        ours, pattern = T4_OPS.get(op), SUMMARY.get(op, ("", "", None))[2]
        if ours is None or gpu not in copy:
            continue
        for r in rows:
            if r["impl"] != ours or not r.get("gbps") or not r.get("median_ms"):
                continue
            if pattern and not re.search(pattern, r["config"]):
                continue
            gbps, ms = float(r["gbps"]), float(r["median_ms"])
            fraction = gbps / copy[gpu]
            if fraction < T4_MIN_FRACTION:  # latency-bound there: the bandwidth model says nothing
                continue
            mbytes = gbps * ms  # GB/s x ms = MB
            t4_ms = mbytes / (T4_BANDWIDTH_GBPS * fraction)
            lines.append(f"| {op} | {r['dtype']} | {r['config']} | {mbytes:.1f} | {r['gpu']} | {ms:.4f} | "
                         f"{fraction:.2f} | {t4_ms:.3f} |")
    if not lines:
        return ""
    return ("\n## T4 (sm_75): estimates, not measurements\n\n"
            f"No T4 has run the benchmark yet. For each memory-bound op (the same CUDA source builds for sm_75) "
            f"and its summary configurations: the bytes the row moved, the measured time and the fraction of "
            f"that card's device-copy bandwidth it reached, and the time on a T4 ({T4_BANDWIDTH_GBPS:.0f} GB/s) "
            "at the same fraction. A T4 has 40 SMs and 64 KiB of shared memory per block, so occupancy and "
            "the split choices differ: read these as a first guess. Rows below "
            f"{T4_MIN_FRACTION:.0%} of the copy bandwidth (small sizes, bound by launch and memory latency) "
            "are left out. The paged decode rows are the "
            "tensor-core variant on Hopper; a T4 runs the CUDA-core loop. attention and gelu_linear run "
            "in fp16 on a T4 (mma.sync m16n8k8, tiles within 64 KiB) and are not estimated here: they are "
            "bound by the tensor cores (65 TFLOP/s fp16), not by bytes.\n\n"
            "| op | dtype | config | MB moved | measured on | ms | fraction of copy | T4 estimate ms |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def roofline_sections(root: Path = ROOFLINE) -> str:
    """Per card profiled by profiling/profile_all.sh: the roofline picture and the per-kernel
    analysis that profiling/roofline/generate_roofline.py wrote next to it (from "## Ceilings" on,
    headings moved one level down), so results.md shows what limits each kernel."""
    parts = []
    for analysis in sorted(root.glob("*/analysis.md")):
        slug = analysis.parent.name
        text = analysis.read_text()
        run = text.split("\n## ", 1)
        if len(run) < 2:
            continue
        intro = [line for line in run[0].splitlines() if line.startswith("Run: ")]
        body = "## " + run[1]
        body = re.sub(r"^## ", "### ", body, flags=re.M)
        svg = analysis.parent / "roofline_all.svg"
        parts.append(f"\n## Roofline on {slug}\n\n"
                     f"Generated by `profiling/profile_all.sh` (Nsight Compute, one launch per kernel family); "
                     f"source: `{analysis.relative_to(ROOT).as_posix()}`. " + (intro[0] if intro else "") + "\n\n"
                     + (f"![roofline on {slug}](../{svg.relative_to(ROOT).as_posix()})\n\n" if svg.exists() else "")
                     + body.rstrip() + "\n")
    return "".join(parts)


def render(tables: dict[tuple[str, str], list[dict]], readme_text: str) -> tuple[str, str]:
    """(docs/results.md, README.md) as the CSVs give them."""
    full = ["# Benchmark results\n", "Generated by `scripts/update_results.py` from `bench/results/<gpu>/<op>.csv`.\n"]
    summary = []
    for (gpu, op), rows in tables.items():
        card, source, (ours, baseline, pattern) = heading(op, rows, gpu)
        table = pivot_data(rows, ours, baseline, None)
        notes = comparison(table)[2]
        full.append(f"\n## {op} on {card} ({source}, {len(rows)} rows)\n\n" + provenance(op, rows) + "\n"
                    + markdown_table(table) + f"\n![{op} on {card}: {ours} against the baselines]"
                    f"({IMG.relative_to(ROOT / 'docs').as_posix()}/{gpu}/{op}.svg)\n"
                    + (f"\n_{' '.join(notes)}_\n" if notes else ""))
        summary.append(f"\n#### {op} on {card} ({source})\n\n"
                       + markdown_table(pivot_data(rows, ours, baseline, pattern)))
    full.append(t4_estimates(tables))
    full.append(roofline_sections())
    readme = readme_text
    if BEGIN in readme and END in readme:
        pre, rest = readme.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        body = ("\n_Generated from the committed CSVs by `scripts/update_results.py`; every table in "
                "`docs/results.md`._\n" + "".join(summary))
        readme = pre + BEGIN + body + "\n" + END + post
    return "".join(full), readme


def render_plots(tables: dict[tuple[str, str], list[dict]]) -> dict[Path, str]:
    """{docs/img/<gpu>/<op>.svg: its SVG text} for every CSV."""
    plots = {}
    for (gpu, op), rows in tables.items():
        card, source, (ours, baseline, _) = heading(op, rows, gpu)
        table = pivot_data(rows, ours, baseline, None)
        impls, configs, notes = comparison(table)
        title = f"{op} on {card}: {ours} against the baselines\n{source}"
        plots[IMG / gpu / f"{op}.svg"] = bar_chart(table, impls, configs, title, notes)
    return plots


def matplotlib_mismatch() -> str | None:
    """Why the SVGs cannot match here: the installed matplotlib is not the locked one (another
    version draws other bytes). None when it is."""
    lock = (ROOT / "requirements-lock.txt").read_text()
    pinned = re.search(r"^matplotlib==(\S+)", lock, re.M)
    if pinned and pinned.group(1) != matplotlib.__version__:
        return f"matplotlib {matplotlib.__version__} is installed, requirements-lock.txt pins {pinned.group(1)}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if README.md, docs/results.md or docs/img/ differ from the CSVs")
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
    results_md, readme = render(tables, (ROOT / "README.md").read_text())
    # Each generated file and its text; None: an SVG whose CSV is gone, to be removed (docs/img/
    # holds only what this script draws).
    targets: dict[Path, str | None] = {ROOT / "docs" / "results.md": results_md, ROOT / "README.md": readme}
    plots = render_plots(tables)
    targets.update({path: None for path in sorted(IMG.glob("*/*.svg")) if path not in plots})
    targets.update(plots)
    mismatch = matplotlib_mismatch()
    if mismatch:
        print(f"update_results: warning: {mismatch}: the SVGs drawn here are not CI's", file=sys.stderr)
    if args.check:
        stale = 0
        for path, text in targets.items():
            old = path.read_text() if path.exists() else None
            if old == text:
                continue
            stale += 1
            name = str(path.relative_to(ROOT))
            if path.suffix == ".md":
                diff = difflib.unified_diff((old or "").splitlines(), text.splitlines(), name, "generated",
                                            lineterm="", n=1)
                print("\n".join(list(diff)[:40]), file=sys.stderr)
            else:  # an SVG's diff says nothing readable
                print(f"{name}: {'missing' if old is None else 'no CSV draws it' if text is None else 'differs'}",
                      file=sys.stderr)
        if stale:
            print("update_results: tables or plots differ from the CSVs; run python3 scripts/update_results.py",
                  file=sys.stderr)
        return 1 if stale else 0
    for path, text in targets.items():
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
