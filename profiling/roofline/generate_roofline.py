"""The roofline of every profiled kernel family of one card, and its analysis, both generated from
profiling/roofline/<slug>/metrics.csv (profiling/roofline/parse_ncu.py; profiling/profile_all.sh
runs both):

    python3 profiling/roofline/generate_roofline.py --slug nvidia-h100-80gb-hbm3 \\
        [--peak-tflops T] [--peak-gbps G] [--peak-fp32-tflops F]
    -> profiling/roofline/<slug>/roofline_all.svg and profiling/roofline/<slug>/analysis.md

Ceilings (solid lines, measured): from the committed benchmark CSVs of the same card,
bench/results/<slug>/*.csv: memory = the best device_copy GB/s of any of them (a copy's read +
write bytes over its time); tensor compute = the best TFLOP/s any float16/bfloat16 row reached
(cuBLAS, cuDNN or our own kernels). Datasheet peaks (dashed lines): the DATASHEET table below,
keyed by the name the CSVs' gpu column holds, or the --peak-* options. A ceiling neither source
gives is left out (and said so).

Classification (CLASSIFY_RULE below): each kernel's achieved fraction of the memory ceiling
(DRAM GB/s) and of the compute ceiling of its precision (tensor cores for tensor FLOPs, the fp32
peak for CUDA-core FLOPs) is computed; the larger names the bound, memory- or compute-bound; when
both are under LATENCY_BELOW (60%, the threshold under which Nsight Compute's speed-of-light rule
reports latency issues), the kernel is latency-bound: neither roof limits it.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Datasheet peaks, dense (no sparsity), at boost clock: NVIDIA's product datasheets. Keyed by the
# device name torch reports (the bench CSVs' gpu column). (fp16/bf16 tensor TFLOP/s, fp32 CUDA-core
# TFLOP/s, HBM GB/s). These are datasheet values, not measurements.
DATASHEET = {
    "NVIDIA H100 80GB HBM3": (989.5, 67.0, 3350.0),   # H100 SXM5
    "NVIDIA H100 PCIe": (756.5, 51.0, 2000.0),
    "NVIDIA H100 NVL": (835.5, 60.0, 3900.0),
    "NVIDIA H200": (989.5, 67.0, 4800.0),              # H200 SXM
    "NVIDIA A100-SXM4-80GB": (312.0, 19.5, 2039.0),
    "NVIDIA A100-SXM4-40GB": (312.0, 19.5, 1555.0),
    "NVIDIA A100 80GB PCIe": (312.0, 19.5, 1935.0),
}

LATENCY_BELOW = 0.6
CLASSIFY_RULE = (
    "For each kernel, f_mem = achieved DRAM GB/s / memory ceiling and f_comp = achieved TFLOP/s / the compute "
    "ceiling of its FLOPs' precision (tensor ceiling for tensor-core FLOPs, fp32 peak for CUDA-core FLOPs; "
    "f_comp = 0 without FLOPs). If max(f_mem, f_comp) < 60% the kernel is **latency-bound** (neither roof "
    "limits it: Nsight Compute's speed-of-light rule reports latency issues under 60%); otherwise it is "
    "**compute-bound** when f_comp > f_mem, else **memory-bound**. Measured ceilings are used where the "
    "benchmarks give them, datasheet ones otherwise.")

# Fixed style, independent of any matplotlibrc: a bundled font, text kept as text (searchable,
# small files), a fixed id salt and no date, so the same inputs give the same SVG.
PLOT_RC = {"font.family": "DejaVu Sans", "font.size": 8, "svg.fonttype": "none", "svg.hashsalt": "flashkernel-roofline"}
SVG_METADATA = {"Date": None, "Creator": None}


@dataclass
class Ceiling:
    value: float   # GB/s for memory, TFLOP/s for compute
    source: str    # where it comes from, said in the legend and the analysis

    def __str__(self) -> str:
        return f"{self.value:,.0f}"


@dataclass
class Ceilings:
    gpu: str
    memory: Ceiling | None = None
    tensor: Ceiling | None = None
    memory_sheet: Ceiling | None = None
    tensor_sheet: Ceiling | None = None
    fp32_sheet: Ceiling | None = None

    def memory_for_rule(self) -> Ceiling | None:
        return self.memory or self.memory_sheet

    def compute_for(self, precision: str) -> Ceiling | None:
        """The compute ceiling of FLOPs of this precision (metrics.csv's flops_precision)."""
        kind = precision.split(":", 1)[-1]
        if kind.startswith("tensor"):
            return self.tensor or self.tensor_sheet
        if kind in ("fp32", "fp16"):
            return self.fp32_sheet
        return None


def _float(text) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def measured_ceilings(bench_dir: Path) -> tuple[Ceiling | None, Ceiling | None, str | None]:
    """(memory, tensor, gpu name) from the benchmark CSVs of one card."""
    memory = tensor = None
    gpu = None
    for path in sorted(bench_dir.glob("*.csv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                gpu = gpu or row.get("gpu") or None
                where = f"{path.name}: {row.get('impl')} {row.get('dtype')} {row.get('config')}"
                gbps, tflops = _float(row.get("gbps")), _float(row.get("tflops"))
                if row.get("impl") == "device_copy" and gbps and (memory is None or gbps > memory.value):
                    memory = Ceiling(gbps, f"best device_copy row ({where})")
                if row.get("dtype") in ("float16", "bfloat16") and tflops and (tensor is None or tflops > tensor.value):
                    tensor = Ceiling(tflops, f"best float16/bfloat16 row ({where})")
    return memory, tensor, gpu


def ceilings_for(slug: str, bench_root: Path, run: dict, args) -> Ceilings:
    memory, tensor, bench_gpu = measured_ceilings(bench_root / slug)
    gpu = bench_gpu or run.get("gpu") or slug
    c = Ceilings(gpu, memory, tensor)
    sheet = DATASHEET.get(gpu)
    if sheet:
        c.tensor_sheet = Ceiling(sheet[0], f"datasheet, {gpu}, dense fp16/bf16 tensor")
        c.fp32_sheet = Ceiling(sheet[1], f"datasheet, {gpu}, fp32 CUDA cores")
        c.memory_sheet = Ceiling(sheet[2], f"datasheet, {gpu}, HBM")
    elif run.get("hbm_gbps_theoretical"):
        c.memory_sheet = Ceiling(float(run["hbm_gbps_theoretical"]),
                                 "device properties: memory clock x bus width (no datasheet entry for this card)")
    if args.peak_tflops:
        c.tensor_sheet = Ceiling(args.peak_tflops, "--peak-tflops")
    if args.peak_fp32_tflops:
        c.fp32_sheet = Ceiling(args.peak_fp32_tflops, "--peak-fp32-tflops")
    if args.peak_gbps:
        c.memory_sheet = Ceiling(args.peak_gbps, "--peak-gbps")
    return c


def classify(tflops: float | None, gbps: float | None, compute: float | None, memory: float | None) -> str:
    """memory-bound / compute-bound / latency-bound by CLASSIFY_RULE; 'unknown' without a ceiling
    or a measurement to compare."""
    f_mem = gbps / memory if gbps is not None and memory else None
    f_comp = (tflops or 0.0) / compute if compute else 0.0
    if f_mem is None and not f_comp:
        return "unknown"
    f_mem = f_mem or 0.0
    if max(f_mem, f_comp) < LATENCY_BELOW:
        return "latency-bound"
    return "compute-bound" if f_comp > f_mem else "memory-bound"


def attainable_tflops(intensity: float, compute: float | None, memory_gbps: float) -> float:
    """The roof at this arithmetic intensity: min(compute, intensity x bandwidth)."""
    roof = intensity * memory_gbps / 1e3
    return min(roof, compute) if compute else roof


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _pct(num: float | None, den: float | None) -> str:
    return "" if num is None or not den else f"{100 * num / den:.0f}%"


def analyse(rows: list[dict], c: Ceilings) -> list[dict]:
    """Per profiled family: the numbers of the analysis table."""
    out = []
    mem = c.memory_for_rule()
    for r in rows:
        if not _float(r.get("duration_us")):
            continue
        tflops, gbps, ai = _float(r["achieved_tflops"]), _float(r["achieved_gbps"]), _float(r["arithmetic_intensity"])
        comp = c.compute_for(r.get("flops_precision", ""))
        flops = _float(r.get("flops")) or 0.0
        roof = attainable_tflops(ai, comp.value if comp else None, mem.value) if ai and mem and flops > 0 else None
        out.append({
            "family": r["family"], "kernel": r["kernel"], "duration_us": _float(r["duration_us"]),
            "ai": ai if flops > 0 else None, "tflops": tflops if flops > 0 else None, "gbps": gbps,
            "pct_compute": _pct(tflops, comp.value if comp and flops > 0 else None),
            "pct_memory": _pct(gbps, mem.value if mem else None),
            "pct_roof": _pct(tflops, roof),
            "bound": classify(tflops if flops > 0 else None, gbps, comp.value if comp else None,
                              mem.value if mem else None),
            "precision": r.get("flops_precision", ""), "occupancy": r.get("occupancy_pct", ""),
            "tensor_pipe": r.get("tensor_pipe_pct", ""), "top_stall": r.get("top_stall", ""), "note": r.get("note", ""),
        })
    return out


def not_drawn(rows: list[dict], analysed: list[dict]) -> dict[str, str]:
    """family -> why it has no point on the roofline."""
    drawn = {a["family"] for a in analysed if a["ai"] and a["tflops"]}
    out = {}
    for r in rows:
        if r["family"] in drawn:
            continue
        if not _float(r.get("duration_us")):
            out[r["family"]] = r.get("note") or "not profiled"
        elif not _float(r.get("flops")):
            out[r["family"]] = "0 FLOPs (data movement): only its GB/s, in the table"
        else:
            out[r["family"]] = "no DRAM bytes measured"
    return out


def _num(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _sig(v: float | None) -> str:
    """3 significant digits, without an exponent for the large values."""
    return "" if v is None else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}")


def write_analysis(path: Path, slug: str, c: Ceilings, analysed: list[dict], missing: dict[str, str],
                   run: dict) -> None:
    facts = [f"{k} {run[k]}" for k in ("capability", "sm_count", "commit", "torch", "flashkernel", "ncu") if run.get(k)]
    lines = [f"# Roofline analysis: {c.gpu}", "",
             "Generated by `profiling/roofline/generate_roofline.py` from `metrics.csv` in this folder (Nsight "
             "Compute counters of one launch of each kernel family, `profiling/profile_all.sh`); do not edit by "
             "hand. The plot is `roofline_all.svg`.", ""]
    if facts:
        lines += ["Run: " + "; ".join(facts).replace("sm_count", "SMs") + ".", ""]
    lines += ["## Ceilings", "", "| ceiling | value | source |", "|---|---|---|"]
    for label, ceiling, unit in (("memory, measured", c.memory, "GB/s"), ("tensor fp16/bf16, measured", c.tensor, "TFLOP/s"),
                                 ("memory, datasheet", c.memory_sheet, "GB/s"),
                                 ("tensor fp16/bf16 dense, datasheet", c.tensor_sheet, "TFLOP/s"),
                                 ("fp32 CUDA cores, datasheet", c.fp32_sheet, "TFLOP/s")):
        value = f"{ceiling} {unit}" if ceiling else "—"
        source = ceiling.source if ceiling else f"not available (no bench/results/{slug} rows or datasheet entry)"
        lines.append(f"| {label} | {value} | {source} |")
    mem, comp = c.memory_for_rule(), c.tensor or c.tensor_sheet
    if mem and comp:
        lines += ["", f"Ridge point (tensor): {comp.value * 1e3 / mem.value:.0f} FLOP/byte."]
    lines += ["", "## Classification rule", "", CLASSIFY_RULE, "",
              "## Kernels", "",
              "Time: the sum of the family's profiled launches (serialized by the profiler, caches flushed before "
              "each). FLOP/byte: FLOPs over DRAM bytes. % of roof: achieved TFLOP/s over the roofline at that "
              "intensity (measured ceilings).", "",
              "| family | kernel | time (us) | FLOP/byte | TFLOP/s | % compute ceiling | GB/s | % memory ceiling "
              "| % of roof | bound | precision | occupancy % | tensor pipe % | top stall | note |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---|---|"]
    for a in analysed:
        cells = [a["family"], f"`{a['kernel']}`", _num(a["duration_us"], ".1f"), _sig(a["ai"]), _sig(a["tflops"]),
                 a["pct_compute"], _num(a["gbps"], ".0f"), a["pct_memory"], a["pct_roof"],
                 a["bound"], a["precision"], a["occupancy"], a["tensor_pipe"], a["top_stall"], a["note"]]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    if missing:
        lines += ["", "## Not on the roofline", ""]
        lines += [f"- {name}: {why}" for name, why in missing.items()]
    path.write_text("\n".join(lines) + "\n")


def _origin(*ceilings: Ceiling | None) -> str:
    """'datasheet', 'device properties' or 'given' (a --peak-* option): where the peaks come from."""
    kinds = []
    for c in ceilings:
        if c:
            kind = "given" if c.source.startswith("--") else c.source.split(":")[0].split(",")[0]
            kinds.append(kind)
    return "/".join(dict.fromkeys(kinds)) or "datasheet"


def _envelope(ax, xs: list[float], memory: Ceiling | None, compute: Ceiling | None, style: dict, what: str,
              memory_label: str | None, compute_label: str) -> None:
    """One roofline, min(bandwidth x intensity, peak), labelled with what each part is; either
    part alone where only one is known."""
    parts = []
    if memory and memory_label:
        parts.append(f"{memory} {memory_label}")
    if compute:
        parts.append(f"{compute} {compute_label}")
    if not parts:
        return
    label = f"{what}: " + ", ".join(parts)
    if memory:
        roof = [x * memory.value / 1e3 for x in xs]
        ys = [min(y, compute.value) for y in roof] if compute else roof
        ax.plot(xs, ys, label=label, **style)
    else:
        ax.axhline(compute.value, label=label, **style)


def draw(path: Path, c: Ceilings, analysed: list[dict], missing: dict[str, str]) -> None:
    import matplotlib
    import matplotlib.style
    from matplotlib.figure import Figure

    points = [a for a in analysed if a["ai"] and a["tflops"]]
    peaks = [x.value for x in (c.tensor, c.tensor_sheet, c.fp32_sheet) if x]
    bws = [x.value for x in (c.memory, c.memory_sheet) if x]
    ridges = [p * 1e3 / b for p in peaks for b in bws]
    xs_known = [a["ai"] for a in points] + ridges
    lo = min(xs_known, default=0.1) / 4
    hi = max(xs_known, default=100.0) * 4
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ys_known = [a["tflops"] for a in points] + peaks
    y_lo = max(min(ys_known, default=1e-3) / 4, 1e-4)
    y_hi = max(ys_known, default=1.0) * 2

    colors = {"memory-bound": "C0", "compute-bound": "C3", "latency-bound": "C2", "unknown": "C7"}
    with matplotlib.style.context("default"), matplotlib.rc_context(PLOT_RC):
        fig = Figure(figsize=(10, 7), layout="constrained")
        ax = fig.add_subplot()
        ax.set_xscale("log")
        ax.set_yscale("log")
        _envelope(ax, xs, c.memory, c.tensor, dict(color="k", lw=1.6),
                  "measured", "GB/s device copy", "TFLOP/s best fp16/bf16 benchmark row")
        _envelope(ax, xs, c.memory_sheet, c.tensor_sheet, dict(color="k", lw=1, ls="--"),
                  _origin(c.memory_sheet, c.tensor_sheet), "GB/s HBM", "TFLOP/s dense fp16/bf16 tensor")
        if c.fp32_sheet:  # the CUDA-core roof shares the memory slope
            _envelope(ax, xs, c.memory_sheet or c.memory, c.fp32_sheet, dict(color="0.45", lw=1, ls=":"),
                      _origin(c.fp32_sheet), None, "TFLOP/s fp32 CUDA cores")
        for kind in colors:
            group = [a for a in points if a["bound"] == kind]
            if not group:
                continue
            for marker, tensor in (("o", True), ("s", False)):
                sel = [a for a in group if a["precision"].split(":")[-1].startswith("tensor") == tensor]
                if sel:
                    ax.scatter([a["ai"] for a in sel], [a["tflops"] for a in sel], s=22, marker=marker,
                               color=colors[kind], zorder=3,
                               label=f"{kind} ({'tensor-core' if tensor else 'CUDA-core'} FLOPs)")
        # Neighbours (in intensity) take turns around their point, so close points' labels overlap less.
        offsets = [((4, 4), "left"), ((4, -9), "left"), ((-4, 4), "right"), ((-4, -9), "right")]
        for i, a in enumerate(sorted(points, key=lambda a: (a["ai"], a["tflops"]))):
            (dx, dy), ha = offsets[i % len(offsets)]
            ax.annotate(a["family"], (a["ai"], a["tflops"]), xytext=(dx, dy), textcoords="offset points", ha=ha,
                        fontsize=6)
        ax.set_xlim(lo, hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_xlabel("arithmetic intensity (FLOP / DRAM byte)")
        ax.set_ylabel("achieved TFLOP/s")
        ax.set_title(f"Roofline: {c.gpu} ({len(points)} kernel families; Nsight Compute, --clock-control none)")
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        ax.legend(loc="upper left", fontsize=6.5)
        if missing:  # in the corner a roofline leaves empty: high intensity, low throughput
            text = "Not drawn: " + "; ".join(f"{n} ({why.split(':')[0]})" for n, why in missing.items())
            ax.text(0.99, 0.01, "\n".join(textwrap.wrap(text, 90)), transform=ax.transAxes, ha="right", va="bottom",
                    multialignment="left", fontsize=6, bbox=dict(facecolor="white", edgecolor="0.8", lw=0.5))
        fig.savefig(path, format="svg", metadata=SVG_METADATA)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slug", required=True, help="card folder name (as bench/results/<slug>)")
    ap.add_argument("--root", type=Path, default=REPO / "profiling" / "roofline", help="where <slug>/metrics.csv is")
    ap.add_argument("--bench-root", type=Path, default=REPO / "bench" / "results", help="benchmark CSVs per card")
    ap.add_argument("--peak-tflops", type=float, help="datasheet dense fp16/bf16 tensor TFLOP/s (overrides the table)")
    ap.add_argument("--peak-fp32-tflops", type=float, help="datasheet fp32 TFLOP/s (overrides the table)")
    ap.add_argument("--peak-gbps", type=float, help="datasheet memory GB/s (overrides the table)")
    args = ap.parse_args(argv)

    folder = args.root / args.slug
    metrics = folder / "metrics.csv"
    if not metrics.exists():
        print(f"generate_roofline: {metrics} does not exist (run profiling/profile_all.sh)", file=sys.stderr)
        return 2
    run_path = folder / "run.json"
    run = json.loads(run_path.read_text()) if run_path.exists() else {}
    c = ceilings_for(args.slug, args.bench_root, run, args)
    rows = read_metrics(metrics)
    analysed = analyse(rows, c)
    missing = not_drawn(rows, analysed)
    write_analysis(folder / "analysis.md", args.slug, c, analysed, missing, run)
    print(f"wrote {folder / 'analysis.md'}")
    if c.memory_for_rule() is None:
        print("warning: no memory ceiling (no device_copy rows, no datasheet entry, no --peak-gbps)", file=sys.stderr)
    try:
        draw(folder / "roofline_all.svg", c, analysed, missing)
    except ImportError as e:
        print(f"generate_roofline: matplotlib is not importable ({e}); roofline_all.svg not written", file=sys.stderr)
        return 1
    print(f"wrote {folder / 'roofline_all.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
