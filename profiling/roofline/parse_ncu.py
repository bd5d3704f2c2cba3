"""Turns Nsight Compute raw-page CSVs of profiling/profile_targets.py into one row per kernel family.

    python3 profiling/roofline/parse_ncu.py --raw RAW.csv [--raw RAW2.csv] --work-json WORK.json [...] \\
        [--slug SLUG] [--out-root profiling/roofline] [--expect a,b,...]
    python3 profiling/roofline/parse_ncu.py --print-metrics [--available QUERY.txt]
    python3 profiling/roofline/parse_ncu.py --unprofiled --raw ... --work-json ... --expect a,b,...

RAW.csv is `ncu --import R.ncu-rep --csv --page raw --print-units base`: a header row (ID, Process
ID, ..., the NVTX range stack, Kernel Name, ..., then one column per metric), a units row, then one
row per profiled launch. A launch belongs to the family named by the NVTX range inside "fk" (the
stack fk/<family>). WORK.json is what profile_targets.py wrote: each family's useful FLOPs and
bytes, or why it was skipped.

Writes into <out-root>/<slug>/ (slug: the benchmark results folder's name for the card,
flashkernel.bench.harness.gpu_slug of the GPU name in WORK.json, unless --slug is given):
  metrics.csv  one row per family: the launches of its ranged call summed (duration, bytes,
               FLOPs; occupancy and tensor-pipe busy weighted by duration; the stall reason that
               cost the most), a note saying what was estimated or left out;
  kernels.csv  one row per profiled launch;
  run.json     the card, the metrics that were missing, the families not profiled and why.
Prints the table and the families that could not be profiled.

--print-metrics prints the comma-separated --metrics list for ncu; with --available (the output of
`ncu --query-metrics`) it keeps only the metrics this ncu and GPU know, so one missing name does
not fail the whole run (ncu refuses unknown metrics), and lists the dropped ones on stderr.
--unprofiled prints the families of --expect that ran or should have run but have no profiled
launch and no skip reason (profile_all.sh profiles those again one by one).
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

DURATION = "gpu__time_duration.sum"
DRAM_READ = "dram__bytes_read.sum"
DRAM_WRITE = "dram__bytes_write.sum"
L2_BYTES = "lts__t_bytes.sum"
OCCUPANCY = "sm__warps_active.avg.pct_of_peak_sustained_active"
# Tensor-pipe busy %: the counter of all tensor pipes where this ncu has it; else the larger of
# Hopper's warpgroup MMA pipe (wgmma, "gmma") and the mma.sync pipe ("hmma").
TENSOR_PIPE_ALL = "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active"
TENSOR_PIPE_PARTS = ("sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
                     "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active")
# FLOPs per counted unit of the sm__ops_path_tensor_* counters: assumed to count FLOPs (a
# multiply-add as 2). The first GPU run checks it: the note of each attention / gelu_linear family
# prints counted / model FLOPs, which must be ~1 (~0.5 would mean they count multiply-adds, and
# this factor must become 2; meanwhile TENSOR_RATIO_TRUSTED places such points by the model).
TENSOR_FLOPS_PER_OP = 1.0
# Counted / model FLOPs within which a tensor-core family's counters are used (masked causal tiles
# and the softmax's fp32 math add a few %; a factor of 2 is a counting error).
TENSOR_RATIO_TRUSTED = (0.75, 1.5)
# (metric, FLOPs per unit, precision). SASS thread-instruction counters: an FMA is 2 FLOPs. A
# packed half2 instruction (HFMA2) counts once but does two lanes' work, so fp16 CUDA-core FLOPs
# are a lower bound (the kernels here do their math in fp32).
FLOP_COUNTERS = (
    ("sm__ops_path_tensor_src_fp16_dst_fp32.sum", TENSOR_FLOPS_PER_OP, "tensor_fp16"),
    ("sm__ops_path_tensor_src_fp16_dst_fp16.sum", TENSOR_FLOPS_PER_OP, "tensor_fp16"),
    ("sm__ops_path_tensor_src_bf16_dst_fp32.sum", TENSOR_FLOPS_PER_OP, "tensor_bf16"),
    ("sm__ops_path_tensor_src_tf32_dst_fp32.sum", TENSOR_FLOPS_PER_OP, "tensor_tf32"),
    ("sm__ops_path_tensor_src_fp8.sum", TENSOR_FLOPS_PER_OP, "tensor_fp8"),
    ("smsp__sass_thread_inst_executed_op_ffma_pred_on.sum", 2.0, "fp32"),
    ("smsp__sass_thread_inst_executed_op_fadd_pred_on.sum", 1.0, "fp32"),
    ("smsp__sass_thread_inst_executed_op_fmul_pred_on.sum", 1.0, "fp32"),
    ("smsp__sass_thread_inst_executed_op_hfma_pred_on.sum", 2.0, "fp16"),
    ("smsp__sass_thread_inst_executed_op_hadd_pred_on.sum", 1.0, "fp16"),
    ("smsp__sass_thread_inst_executed_op_hmul_pred_on.sum", 1.0, "fp16"),
)
# Warp stall reasons (Nsight Compute's WarpStateStats names; gmma is Hopper's, no_instruction has
# had both spellings). Each metric is the average cycles a warp spent in that state per issued
# instruction; the largest is the top stall. "selected" (the warp issued) is not a stall.
STALL_REASONS = ("barrier", "branch_resolving", "dispatch_stall", "drain", "gmma", "imc_miss", "lg_throttle",
                 "long_scoreboard", "math_pipe_throttle", "membar", "mio_throttle", "misc", "no_instruction",
                 "no_instructions", "not_selected", "short_scoreboard", "sleeping", "tex_throttle", "wait")
STALL_METRIC = "smsp__average_warps_issue_stalled_{}_per_issue_active.ratio"

# What each group of metrics measures: a measure is missing only when none of its metrics is in
# the report (alternatives: the tensor-pipe counters, the two spellings of a stall reason, ...).
MEASURES = {
    "duration": [DURATION],
    "DRAM bytes": [DRAM_READ, DRAM_WRITE],
    "L2 bytes": [L2_BYTES],
    "occupancy": [OCCUPANCY],
    "tensor pipe busy": [TENSOR_PIPE_ALL, *TENSOR_PIPE_PARTS],
    "tensor-core FLOPs": [m for m, _, p in FLOP_COUNTERS if p.startswith("tensor")],
    "CUDA-core FLOPs": [m for m, _, p in FLOP_COUNTERS if not p.startswith("tensor")],
    "warp stall reasons": [STALL_METRIC.format(r) for r in STALL_REASONS],
}
METRICS = [DURATION, DRAM_READ, DRAM_WRITE, L2_BYTES, OCCUPANCY, TENSOR_PIPE_ALL, *TENSOR_PIPE_PARTS,
           *(m for m, _, _ in FLOP_COUNTERS), *(STALL_METRIC.format(r) for r in STALL_REASONS)]

COLUMNS = ["family", "kernel", "duration_us", "dram_bytes", "l2_bytes", "flops", "flops_precision",
           "achieved_tflops", "achieved_gbps", "arithmetic_intensity", "occupancy_pct", "tensor_pipe_pct",
           "top_stall", "note"]
KERNEL_COLUMNS = ["family", "id", "kernel", "counted", "duration_us", "dram_bytes", "l2_bytes", "flops",
                  "occupancy_pct", "tensor_pipe_pct", "top_stall", "kernel_full"]

# Units as ncu prints them, to the base unit (--print-units base already gives byte and nsecond;
# the others keep a report printed without it readable). Nsight Compute's byte prefixes are SI.
UNIT_SCALE = {"byte": 1, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12,
              "kibyte": 2**10, "mibyte": 2**20, "gibyte": 2**30,
              "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0}
TIME_TO_NS = 1e9


def metric_base(name: str) -> str:
    """'sm__warps_active.avg.pct_of_peak_sustained_active' -> 'sm__warps_active' (what
    `ncu --query-metrics` lists)."""
    return name.split(".", 1)[0]


def available_metrics(query_text: str) -> set[str]:
    """Base metric names in the output of `ncu --query-metrics` (first word of each table line)."""
    return {m.group(1) for m in re.finditer(r"^\s*([a-z0-9_]+__[a-z0-9_]+)", query_text, re.M)}


def number(text: str | None) -> float | None:
    """A metric value as ncu prints it ('1,234,567.5', 'n/a', '') -> float or None."""
    if text is None:
        return None
    t = text.strip().replace(",", "")
    if not t or t.lower() in ("n/a", "nan", "-"):
        return None
    try:
        return float(t)
    except ValueError:
        return None


def short_kernel_name(name: str) -> str:
    """'void ns::kernel<128, float>(const float *, int)' -> 'ns::kernel<…>': no return type, no
    template arguments, no parameters (kernels.csv keeps the full name)."""
    text = re.sub(r"^void\s+", "", name.strip())
    text = re.sub(r"(\(anonymous namespace\)|<?unnamed>)::", "", text)  # ncu's two spellings of it
    out, depth_angle = [], 0
    for ch in text:
        if ch == "(" and depth_angle == 0:
            break  # the parameter list: everything after it is left out
        if ch == "<":
            depth_angle += 1
            if depth_angle == 1:
                out.append("<…>")
            continue
        if ch == ">" and depth_angle:
            depth_angle -= 1
            continue
        if depth_angle == 0:
            out.append(ch)
    return "".join(out).strip() or name


def nvtx_stack(cell: str) -> list[str]:
    """Range names of an NVTX push/pop column cell, outermost first. ncu writes the thread id, then
    each range as a quoted '<domain>:<name>:<payload type>:<payload>:<color type>:<color>:<message
    type>:<message>' (a name may itself hold ':', so it is everything between the domain and the
    last six fields)."""
    names = []
    # Quoted entries; a cell printed without quotes: its space-separated '<domain>:...' tokens.
    segments = re.findall(r'"([^"]*)"', cell) or [t for t in cell.split() if ":" in t]
    for seg in segments:
        parts = seg.split(":")
        if len(parts) >= 8:
            names.append(":".join(parts[1:-6]))
        elif len(parts) >= 2:
            names.append(parts[1])
        elif seg.strip():
            names.append(seg.strip())
    return names


def family_of(cell: str, known: set[str] | None = None) -> str | None:
    """The family a launch belongs to: the range next to "fk" in the stack (the one nested in it;
    the one before it, should ncu list the innermost first), preferring a name in `known`; or a
    single range named 'fk/<family>', should a driver name them so."""
    stack = nvtx_stack(cell)
    candidates = []
    for i, name in enumerate(stack):
        if name == "fk":
            candidates += [n for n in (stack[i + 1:i + 2] + stack[max(i - 1, 0):i]) if n != "fk"]
    for name in stack or [cell]:
        m = re.search(r"(?:^|[^\w])fk/([\w.\-]+)", name)
        if m:
            candidates.append(m.group(1))
    if known:
        candidates = [n for n in candidates if n in known] or candidates
    return candidates[0] if candidates else None


@dataclass
class Launch:
    family: str
    source: int  # which raw CSV (launch ids restart in each)
    id: int
    kernel: str
    values: dict[str, float | None]

    def get(self, metric: str) -> float | None:
        return self.values.get(metric)

    @property
    def duration_ns(self) -> float | None:
        return self.get(DURATION)

    @property
    def dram_bytes(self) -> float | None:
        r, w = self.get(DRAM_READ), self.get(DRAM_WRITE)
        return None if r is None or w is None else r + w

    def flops_by_precision(self) -> dict[str, float] | None:
        """FLOPs per precision from the counters present; None when no FLOP counter was collected."""
        seen, out = False, {}
        for metric, per_unit, precision in FLOP_COUNTERS:
            v = self.get(metric)
            if v is None:
                continue
            seen = True
            out[precision] = out.get(precision, 0.0) + v * per_unit
        return out if seen else None

    def tensor_pipe_pct(self) -> float | None:
        v = self.get(TENSOR_PIPE_ALL)
        if v is not None:
            return v
        parts = [p for p in (self.get(m) for m in TENSOR_PIPE_PARTS) if p is not None]
        return max(parts) if parts else None

    def stalls(self) -> dict[str, float]:
        out = {}
        for reason in STALL_REASONS:
            v = self.get(STALL_METRIC.format(reason))
            if v is not None:
                out[reason.rstrip("s") if reason == "no_instructions" else reason] = v
        return out


def read_raw(path: Path, source: int, known: set[str] | None = None) -> tuple[list[Launch], set[str], list[str]]:
    """(launches, metric columns present, warnings) of one raw-page CSV; `known`: the family names
    (see family_of). Lines ncu or the application printed around the table (==PROF== ...) are
    skipped."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID",')), None)
    if start is None:
        return [], set(), [f"{path.name}: no Nsight Compute table (no header row starting with \"ID\")"]
    rows = [r for r in csv.reader(lines[start:]) if r]
    header, units = rows[0], rows[1] if len(rows) > 1 else []
    col = {name: i for i, name in enumerate(header)}
    nvtx_cols = [i for i, name in enumerate(header) if "Push/Pop_Range" in name]
    warnings = []
    if not nvtx_cols:
        warnings.append(f"{path.name}: no NVTX push/pop column (profile with --nvtx); its launches are not attributed")
    metric_cols = {name: i for name, i in col.items() if "__" in name}
    launches = []
    for r in rows[2:]:
        if len(r) < len(header) or not r[col["ID"]].strip().isdigit():
            continue
        family = None
        for i in nvtx_cols:
            family = family_of(r[i], known) or family
        if family is None:
            continue
        values = {}
        for name, i in metric_cols.items():
            v = number(r[i])
            unit = units[i].strip().lower() if i < len(units) else ""
            if v is not None and unit in UNIT_SCALE:
                v *= UNIT_SCALE[unit]
                if unit.endswith("second"):
                    v *= TIME_TO_NS  # durations are kept in ns
            values[name] = v
        launches.append(Launch(family, source, int(r[col["ID"]]), r[col.get("Kernel Name", 0)], values))
    return launches, set(metric_cols), warnings


def merge_work(paths: list[Path]) -> dict:
    """The work records of several profile_targets.py runs (profile_all.sh reruns families one by
    one when the run of all of them fails): per family, the first record that ran, else the first."""
    merged: dict = {"families": {}}
    for path in paths:
        data = json.loads(path.read_text())
        for key, value in data.items():
            if key != "families":
                merged.setdefault(key, value)
        for name, rec in data.get("families", {}).items():
            old = merged["families"].get(name)
            if old is None or (old.get("skipped") and not rec.get("skipped")):
                merged["families"][name] = rec
    return merged


@dataclass
class FamilyResult:
    family: str
    launches: list[Launch] = field(default_factory=list)
    counted: list[Launch] = field(default_factory=list)  # after leaving out a subtracted family's launches
    notes: list[str] = field(default_factory=list)


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _weighted(launches: list[Launch], value) -> float | None:
    pairs = [(value(x), x.duration_ns or 0.0) for x in launches]
    pairs = [(v, w) for v, w in pairs if v is not None]
    total = sum(w for _, w in pairs)
    if not pairs:
        return None
    return sum(v * w for v, w in pairs) / total if total > 0 else sum(v for v, _ in pairs) / len(pairs)


def summarize(fam: FamilyResult, work: dict | None) -> dict:
    """The metrics.csv row of one family from its counted launches and its work record."""
    row = {c: "" for c in COLUMNS}
    row["family"] = fam.family
    launches = fam.counted
    notes = list(fam.notes)
    if work and work.get("skipped"):
        row["note"] = f"skipped: {work['skipped']}"
        return row
    if not launches:
        row["note"] = "not profiled: " + ("; ".join(notes) if notes else "no launch in its NVTX range was profiled")
        return row
    longest = max(launches, key=lambda x: x.duration_ns or 0.0)
    row["kernel"] = short_kernel_name(longest.kernel) + (f" +{len(launches) - 1} more" if len(launches) > 1 else "")
    durations = [x.duration_ns for x in launches]
    duration_ns = None if any(d is None for d in durations) else sum(durations)
    dram = [x.dram_bytes for x in launches]
    dram_bytes = None if any(b is None for b in dram) else sum(dram)
    l2 = [x.get(L2_BYTES) for x in launches]
    l2_bytes = None if any(b is None for b in l2) else sum(l2)
    model_flops = float(work.get("flops") or 0.0) if work else None
    model_bytes = float(work.get("bytes") or 0.0) if work else None

    by_precision: dict[str, float] = {}
    counted_any = False
    for x in launches:
        f = x.flops_by_precision()
        if f is not None:
            counted_any = True
            for k, v in f.items():
                by_precision[k] = by_precision.get(k, 0.0) + v
    if counted_any:
        flops = sum(by_precision.values())
        precision = max(by_precision, key=by_precision.get) if flops > 0 else "none"
        if model_flops:
            ratio = flops / model_flops
            notes.append(f"counted/model FLOPs {ratio:.2f}")
            # Tensor-core work is what the model counts exactly (GEMM and attention FLOPs); counters
            # far from it mean a counter this GPU or ncu does not fill (or a wrong FLOPs-per-op
            # factor), so the point is placed by the model and the note says so.
            if work.get("flops_kind") == "tensor" and not TENSOR_RATIO_TRUSTED[0] <= ratio <= TENSOR_RATIO_TRUSTED[1]:
                flops, precision = model_flops, "model:tensor"
                notes.append("counters disagree with the work model: its FLOPs used")
    elif model_flops is not None:
        flops, precision = model_flops, f"model:{work.get('flops_kind', '?')}"
        notes.append("FLOPs from the work model (no FLOP counter collected)")
    else:
        flops, precision = None, ""
    if dram_bytes is None and model_bytes:
        dram_bytes = model_bytes
        notes.append("bytes from the work model (no DRAM counter collected)")
    elif dram_bytes and model_bytes:
        notes.append(f"DRAM/model bytes {dram_bytes / model_bytes:.2f}")

    seconds = duration_ns / 1e9 if duration_ns else None
    stall_totals: dict[str, float] = {}
    for x in launches:
        for reason, v in x.stalls().items():
            stall_totals[reason] = stall_totals.get(reason, 0.0) + v * (x.duration_ns or 1.0)
    stall_totals.pop("selected", None)
    stall_sum = sum(stall_totals.values())
    if stall_sum > 0:
        top = max(stall_totals, key=stall_totals.get)
        row["top_stall"] = f"{top} ({100 * stall_totals[top] / stall_sum:.0f}%)"

    row.update({
        "duration_us": _fmt(duration_ns / 1e3 if duration_ns is not None else None, ".3f"),
        "dram_bytes": _fmt(dram_bytes, ".0f"),
        "l2_bytes": _fmt(l2_bytes, ".0f"),
        "flops": _fmt(flops, ".0f"),
        "flops_precision": precision,
        "achieved_tflops": _fmt(flops / seconds / 1e12 if seconds and flops is not None else None, ".5g"),
        "achieved_gbps": _fmt(dram_bytes / seconds / 1e9 if seconds and dram_bytes is not None else None, ".1f"),
        "arithmetic_intensity": _fmt(flops / dram_bytes if flops is not None and dram_bytes else None, ".5g"),
        "occupancy_pct": _fmt(_weighted(launches, lambda x: x.get(OCCUPANCY)), ".1f"),
        "tensor_pipe_pct": _fmt(_weighted(launches, Launch.tensor_pipe_pct), ".1f"),
        "note": "; ".join(notes),
    })
    return row


def group(launches: list[Launch], work: dict, order: list[str]) -> dict[str, FamilyResult]:
    """Launches per family, families in `order` (then any others), with each family's subtracted
    launches left out: gpt2_decode's call starts with the same prefill as gpt2_prefill's, so its
    first len(gpt2_prefill) launches are dropped when their kernel names match."""
    results: dict[str, FamilyResult] = {name: FamilyResult(name) for name in order}
    # Per family, the launches of the first raw CSV that has any (a family profiled again one by
    # one after a failed run appears once).
    for x in sorted(launches, key=lambda x: (x.source, x.id)):
        fam = results.setdefault(x.family, FamilyResult(x.family))
        if not fam.launches or fam.launches[0].source == x.source:
            fam.launches.append(x)
    for name, fam in results.items():
        fam.counted = list(fam.launches)
        rec = work.get("families", {}).get(name) or {}
        base_name = rec.get("subtract")
        if not base_name or not fam.launches:
            continue
        base = results.get(base_name)
        lead = [short_kernel_name(x.kernel) for x in base.launches] if base else []
        mine = [short_kernel_name(x.kernel) for x in fam.launches]
        if lead and len(mine) > len(lead) and mine[:len(lead)] == lead:
            fam.counted = fam.launches[len(lead):]
            fam.notes.append(f"first {len(lead)} launches (the {base_name} part of the call) left out")
        else:
            why = "not profiled" if not lead else "its launches do not lead this call's"
            fam.notes.append(f"{base_name} {why}: all {len(mine)} launches counted, the {base_name} part included")
    return results


def gpu_slug(name: str) -> str:
    """The benchmarks' results-folder name for a GPU (flashkernel.bench.harness.gpu_slug), loaded
    from the file so that naming a folder needs neither the op library nor the package installed."""
    spec = importlib.util.spec_from_file_location("flashkernel_bench_harness",
                                                  REPO / "python" / "flashkernel" / "bench" / "harness.py")
    harness = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = harness  # its dataclasses look their module up there
    spec.loader.exec_module(harness)
    return harness.gpu_slug(name)


def not_profiled(results: dict[str, FamilyResult], work: dict, expect: list[str]) -> dict[str, str]:
    """family -> why it has no profiled launch, for the families expected or recorded."""
    out = {}
    recs = work.get("families", {})
    for name in list(dict.fromkeys([*expect, *recs])):
        rec = recs.get(name)
        fam = results.get(name)
        if rec is None and (fam is None or not fam.launches):
            out[name] = "not run: the profiled process ended before it (crash or time limit; see the ncu log)"
        elif rec is not None and rec.get("skipped"):
            out[name] = f"skipped: {rec['skipped']}"
        elif fam is None or not fam.counted:
            out[name] = "ran, but no launch in its NVTX range was profiled (ncu failed or timed out, or its filter missed)"
    return out


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def kernel_rows(results: dict[str, FamilyResult]) -> list[dict]:
    rows = []
    for fam in results.values():
        counted = {id(x) for x in fam.counted}
        for x in fam.launches:
            stalls = {k: v for k, v in x.stalls().items() if k != "selected"}
            f = x.flops_by_precision()
            rows.append({
                "family": fam.family, "id": x.id, "kernel": short_kernel_name(x.kernel),
                "counted": int(id(x) in counted),
                "duration_us": _fmt(x.duration_ns / 1e3 if x.duration_ns is not None else None, ".3f"),
                "dram_bytes": _fmt(x.dram_bytes, ".0f"), "l2_bytes": _fmt(x.get(L2_BYTES), ".0f"),
                "flops": _fmt(sum(f.values()) if f is not None else None, ".0f"),
                "occupancy_pct": _fmt(x.get(OCCUPANCY), ".1f"), "tensor_pipe_pct": _fmt(x.tensor_pipe_pct(), ".1f"),
                "top_stall": max(stalls, key=stalls.get) if stalls else "", "kernel_full": x.kernel,
            })
    return rows


def parse(raws: list[Path], works: list[Path], expect: list[str]):
    """(family results, merged work, metrics present, warnings)."""
    work = merge_work(works)
    launches, present, warnings = [], set(), []
    for source, path in enumerate(raws):
        if not path.exists():
            warnings.append(f"{path.name}: missing (ncu wrote no report)")
            continue
        ls, cols, warns = read_raw(path, source, set(expect) | set(work.get("families", {})))
        launches += ls
        present |= cols
        warnings += warns
    order = list(dict.fromkeys([*expect, *work.get("families", {})]))
    return group(launches, work, order), work, present, warnings


def print_table(rows: list[dict]) -> None:
    print(f"{'family':<28} {'us':>10} {'TFLOP/s':>9} {'GB/s':>8} {'FLOP/B':>9} {'occ%':>6} {'tc%':>6}  top stall")
    for r in rows:
        if not r["duration_us"]:
            continue
        print(f"{r['family']:<28} {r['duration_us']:>10} {r['achieved_tflops']:>9} {r['achieved_gbps']:>8} "
              f"{r['arithmetic_intensity']:>9} {r['occupancy_pct']:>6} {r['tensor_pipe_pct']:>6}  {r['top_stall']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, action="append", default=[], help="ncu raw-page CSV (repeatable)")
    ap.add_argument("--work-json", type=Path, action="append", default=[], help="profile_targets.py work record")
    ap.add_argument("--slug", help="results folder name (default: gpu_slug of the GPU in the work record)")
    ap.add_argument("--out-root", type=Path, default=REPO / "profiling" / "roofline")
    ap.add_argument("--expect", default="", help="comma-separated families the run was asked for")
    ap.add_argument("--ncu-version", default="", help="recorded in run.json")
    ap.add_argument("--print-metrics", action="store_true", help="print the --metrics list for ncu and exit")
    ap.add_argument("--available", type=Path, help="with --print-metrics: `ncu --query-metrics` output")
    ap.add_argument("--unprofiled", action="store_true", help="print expected families without profiled launches")
    args = ap.parse_args(argv)

    if args.print_metrics:
        wanted = METRICS
        if args.available and args.available.exists():
            known = available_metrics(args.available.read_text(errors="replace"))
            if known:  # an empty query (ncu failed to list) keeps everything rather than nothing
                dropped = [m for m in wanted if metric_base(m) not in known]
                wanted = [m for m in wanted if metric_base(m) in known]
                if dropped:
                    print("metrics this ncu/GPU does not list (not collected): " + ", ".join(dropped), file=sys.stderr)
        print(",".join(wanted))
        return 0

    expect = [e for e in args.expect.split(",") if e]
    if not args.work_json:
        ap.error("--work-json is required")
    works = [p for p in args.work_json if p.exists()]
    results, work, present, warnings = parse(args.raw, works, expect)
    missing = not_profiled(results, work, expect)
    if args.unprofiled:
        print("\n".join(n for n, why in missing.items() if not why.startswith("skipped")))
        return 0
    if "gpu" not in work:
        print("parse_ncu: the work record names no GPU (profile_targets.py did not start?)", file=sys.stderr)
        if not args.slug:
            return 2
    slug = args.slug or gpu_slug(work["gpu"])
    out = args.out_root / slug
    out.mkdir(parents=True, exist_ok=True)
    rows = [summarize(fam, work.get("families", {}).get(name)) for name, fam in results.items()]
    write_csv(out / "metrics.csv", COLUMNS, rows)
    write_csv(out / "kernels.csv", KERNEL_COLUMNS, kernel_rows(results))
    run = {k: work.get(k) for k in ("gpu", "capability", "sm_count", "commit", "torch", "flashkernel",
                                    "hbm_gbps_theoretical")}
    run.update({"slug": slug, "ncu": args.ncu_version or None,
                "measures_missing": [k for k, ms in MEASURES.items() if not any(m in present for m in ms)],
                "metrics_absent": [m for m in METRICS if m not in present],
                "not_profiled": missing, "warnings": warnings,
                "generated_by": "profiling/roofline/parse_ncu.py"})
    (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")

    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print_table(rows)
    if run["measures_missing"]:
        print("\nnot measured (none of their metrics in the report): " + ", ".join(run["measures_missing"]))
    print(f"\nwrote {out / 'metrics.csv'} ({sum(1 for r in rows if r['duration_us'])} of {len(rows)} families profiled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
