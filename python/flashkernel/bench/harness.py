"""The one benchmark harness: CUDA-event timing, inputs rotated past L2, rows in the shared CSV
schema (op,impl,dtype,config,median_ms,tflops,gbps,gpu,torch,commit), a progress display per
configuration with an estimate of the time left (flashkernel/bench/progress.py).

Each benchmark module (flashkernel/bench/ops/<name>.py) defines `run(ctx, quick)` and calls
`ctx.time(...)` then `ctx.record(...)` for every (impl, config); baselines are timed in the same
process on the same card, so every row is also a ratio.
"""
from __future__ import annotations

import csv
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from flashkernel.bench.progress import SweepProgress

COLUMNS = ["op", "impl", "dtype", "config", "median_ms", "tflops", "gbps", "gpu", "torch", "commit",
           "p10_ms", "p90_ms", "runs"]
# A tree exported for a machine without git (scripts/export_tree.sh) carries the commit it was
# exported from in this file, at its root.
COMMIT_FILE = ".flashkernel-commit"
REPO_ROOT = Path(__file__).resolve().parents[3]
if not ((REPO_ROOT / ".git").exists() or (REPO_ROOT / COMMIT_FILE).exists()):
    REPO_ROOT = Path.cwd()  # installed package: results go under the working directory
_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}(-dirty)?$")


class CommitUnknownError(RuntimeError):
    """The benchmarked code cannot be named by a commit, so its results would not be traceable."""


def gpu_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (the results folder)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _commit_file(root: Path) -> str | None:
    """The commit id in root's commit file (written by scripts/export_tree.sh), None without one."""
    commit_file = root / COMMIT_FILE
    if not commit_file.exists():
        return None
    text = commit_file.read_text().strip()
    if not _COMMIT_RE.match(text):
        raise CommitUnknownError(f"{commit_file} does not hold a commit id (found {text[:60]!r})")
    return text


def git_commit(root: Path | None = None) -> str:
    """The commit benchmarked, which every results row carries. In order: FLASHKERNEL_COMMIT;
    git's HEAD of the checkout (+"-dirty" with uncommitted changes to tracked files); the commit
    file of an exported tree. Raises CommitUnknownError when none of them names a commit (a
    results file must say which code produced it), and when a tree holds both a .git and a commit
    file that disagree: a copied tree can carry a stale .git next to the commit file its binaries
    were built at, and guessing which one ran would mislabel every row."""
    root = REPO_ROOT if root is None else root
    env = os.environ.get("FLASHKERNEL_COMMIT", "").strip()
    if env:
        if not _COMMIT_RE.match(env):
            raise CommitUnknownError(f"FLASHKERNEL_COMMIT={env!r} is not a commit id (7-40 hex digits, "
                                     "optionally followed by -dirty)")
        return env
    if (root / ".git").exists() and shutil.which("git"):
        try:
            head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                                  text=True, timeout=10)
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                   capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as e:
            raise CommitUnknownError(f"cannot run git in {root} to name the benchmarked commit ({e}); "
                                     "set FLASHKERNEL_COMMIT") from e
        if head.returncode != 0 or dirty.returncode != 0:
            raise CommitUnknownError(f"git could not name the commit of {root}: "
                                     f"{(head.stderr or dirty.stderr).strip()}; set FLASHKERNEL_COMMIT")
        sha = head.stdout.strip()
        from_file = _commit_file(root)
        if from_file is not None:
            a, b = sha, from_file.removesuffix("-dirty")
            if not (a.startswith(b) or b.startswith(a)):
                raise CommitUnknownError(
                    f"{root} names two commits: git's HEAD {sha} and {COMMIT_FILE} {from_file}; set "
                    "FLASHKERNEL_COMMIT to the commit the benchmarked build came from, or remove the stale one")
        return sha + ("-dirty" if dirty.stdout.strip() else "")
    from_file = _commit_file(root)
    if from_file is not None:
        return from_file
    raise CommitUnknownError(
        f"cannot tell which commit is being benchmarked: {root} has no .git (or no git to read it) and no "
        f"{COMMIT_FILE} file. "
        "Set FLASHKERNEL_COMMIT=<sha> (the commit this tree was copied from), or copy the tree with "
        "scripts/export_tree.sh, which writes the commit file.")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    host_us: float | None = None  # host cost of one call (call to return, launches queued), if measured

    @classmethod
    def of(cls, samples_ms: Sequence[float], host_us: float | None = None) -> Timing:
        """The median, p10 and p90 of `samples_ms` (one sample: all three are it)."""
        q = statistics.quantiles(samples_ms, n=10) if len(samples_ms) >= 2 else [samples_ms[0]] * 9
        return cls(statistics.median(samples_ms), q[0], q[-1], len(samples_ms), host_us)


@dataclass
class BenchContext:
    out_dir: Path
    quick: bool = False
    min_runs: int = 20
    max_runs: int = 200
    target_seconds: float = 0.25   # per measured (impl, config): keeps a full sweep to minutes
    rows: list[dict] = field(default_factory=list)
    _cycles_per_us: float | None = field(default=None, repr=False)
    _sweep: SweepProgress | None = field(default=None, repr=False)

    def __post_init__(self):
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        self.gpu = props.name
        self.l2_bytes = props.L2_cache_size
        self.torch_version = torch.__version__
        self.commit = git_commit()

    # ------------------------------------------------------------------ inputs
    def rotation_count(self, bytes_per_set: int) -> int:
        """How many distinct input sets to cycle through so that together they exceed 2x L2: each
        timed call then reads from HBM, not from the cache the previous call warmed."""
        if bytes_per_set <= 0:
            return 1
        return int(min(64, max(1, math.ceil(2 * self.l2_bytes / bytes_per_set))))

    def rotating(self, make_inputs: Callable[[], Sequence], bytes_per_set: int) -> list[Sequence]:
        return [make_inputs() for _ in range(self.rotation_count(bytes_per_set))]

    # ------------------------------------------------------------------ timing
    def time(self, fn: Callable, input_sets: Sequence[Sequence] | None = None, warmup: int = 3) -> Timing:
        """Median over many runs, each timed with its own pair of CUDA events; input sets rotate.

        The events measure the device: where one call's host cost (Python, dispatch, launch) is
        longer than its GPU time, the GPU would sit idle between the start event and the kernel and
        the event pair would time the host. So each timed call is preceded, outside its events, by
        a spin kernel longer than the host cost (as triton.testing.do_bench's cache flush does
        implicitly): the host is then ahead of the GPU when the start event runs. The host cost is
        measured separately and reported as its own column (host_us)."""
        sets = list(input_sets) if input_sets else [()]
        for i in range(warmup):
            fn(*sets[i % len(sets)])
        torch.cuda.synchronize()
        # Estimate one call's cost to size the run count.
        t0 = time.perf_counter()
        fn(*sets[0])
        torch.cuda.synchronize()
        est = max(time.perf_counter() - t0, 1e-6)
        runs = int(min(self.max_runs, max(self.min_runs, self.target_seconds / est)))
        if self.quick:
            runs = min(runs, 10)
        host_us = self._host_us(fn, sets)
        # Head start per call: twice the host cost plus the events' own, at least 50 us. Calls
        # whose host cost is not measured take > 1 ms on the GPU and need none.
        lead_cycles = self._spin_cycles(max(50.0, 2 * host_us + 20.0)) if host_us is not None else 0
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
        for i in range(runs):
            args = sets[i % len(sets)]
            if lead_cycles:
                torch.cuda._sleep(lead_cycles)
            starts[i].record()
            fn(*args)
            ends[i].record()
        torch.cuda.synchronize()
        return Timing.of([s.elapsed_time(e) for s, e in zip(starts, ends)], host_us)

    def alternate(self, op: str, impls: dict[str, Callable], input_sets: Sequence[Sequence], dtype, config: str,
                  rounds: int, flops: float | None = None, bytes_moved: float | None = None) -> dict[str, float]:
        """An A/B that no order of runs can bias: each of `rounds` rounds times every impl once, in
        turn (`time`), on the same inputs. Records one row per impl (median over the rounds of each
        round's median; p10/p90 and runs over the rounds; config gets rounds=N) and returns
        {impl: median ms}."""
        medians: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(rounds):
            for name, fn in impls.items():
                medians[name].append(self.time(fn, input_sets).median_ms)
        result = {}
        for name, values in medians.items():
            timing = Timing.of(values)
            result[name] = timing.median_ms
            self.record(op, name, dtype, f"{config} rounds={rounds}", timing, flops=flops, bytes_moved=bytes_moved)
        return result

    def _spin_cycles(self, us: float) -> int:
        """GPU clock cycles that torch.cuda._sleep spins for `us` microseconds, calibrated once on
        this card (the spin counts SM clock cycles, whose rate the card sets)."""
        if self._cycles_per_us is None:
            probe = 1_000_000
            torch.cuda._sleep(probe // 10)  # warm the kernel up
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            torch.cuda._sleep(probe)
            b.record()
            torch.cuda.synchronize()
            self._cycles_per_us = probe / max(a.elapsed_time(b) * 1e3, 1e-3)
        return int(us * self._cycles_per_us)

    def _host_us(self, fn: Callable, sets: Sequence[Sequence], calls: int = 32) -> float | None:
        """Host cost of one call: the wall time of `calls` back-to-back calls with no
        synchronization, divided by `calls`. Where the GPU is faster than the host (small sizes) it
        is also what the CUDA-event time measures; where it is slower, the launches just queue (32
        calls stay far below the launch queue's depth), so the number is still the host's.
        Returns None where the GPU time is long enough that the host cost does not matter
        (> 1 ms a call), so large sweeps do not pay for it."""
        # The fastest of three synchronized calls: one alone can take > 1 ms on a busy host.
        one_call_s = math.inf
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(*sets[0])
            torch.cuda.synchronize()
            one_call_s = min(one_call_s, time.perf_counter() - t0)
        if one_call_s > 1e-3:
            return None
        t0 = time.perf_counter()
        for i in range(calls):
            fn(*sets[i % len(sets)])
        elapsed = time.perf_counter() - t0
        torch.cuda.synchronize()
        return elapsed / calls * 1e6

    # ------------------------------------------------------------------ results
    def record(self, op: str, impl: str, dtype, config: str, timing: Timing | None,
               flops: float | None = None, bytes_moved: float | None = None, note: str = "") -> dict:
        """One CSV row. tflops = flops / time, gbps = bytes_moved / time (leave None where not
        meaningful). timing=None records an impl that could not run (note says why)."""
        dt = dtype if isinstance(dtype, str) else dtype_name(dtype)
        row = {"op": op, "impl": impl, "dtype": dt, "config": config, "gpu": self.gpu,
               "torch": self.torch_version, "commit": self.commit}
        if timing is None:
            row.update({"median_ms": "", "tflops": "", "gbps": "", "p10_ms": "", "p90_ms": "", "runs": 0})
        else:
            s = timing.median_ms / 1e3
            row.update({
                "median_ms": f"{timing.median_ms:.6f}",
                "tflops": f"{flops / s / 1e12:.3f}" if flops else "",
                "gbps": f"{bytes_moved / s / 1e9:.2f}" if bytes_moved else "",
                "p10_ms": f"{timing.p10_ms:.6f}", "p90_ms": f"{timing.p90_ms:.6f}", "runs": timing.runs,
            })
            if timing.host_us is not None:
                row["host_us"] = f"{timing.host_us:.1f}"
        if note:
            row["note"] = note
        self.rows.append(row)
        self._progress(row)
        return row

    # ------------------------------------------------------------------ progress
    def begin(self, name: str, total_configs: int | None = None) -> None:
        """A benchmark starts: its progress is counted per configuration from here, with an
        estimate of the time left when total_configs (its module's count_configs) is known."""
        self.end()
        self._sweep = SweepProgress(name, total_configs)

    def end(self) -> None:
        if self._sweep is not None:
            self._sweep.close()
            self._sweep = None

    def _progress(self, row: dict) -> None:
        if self._sweep is None:  # rows recorded outside begin()/end(): one sweep of unknown length
            self._sweep = SweepProgress(row.get("op", "bench"), None)
        self._sweep.row(row)

    def write_csv(self, name: str, rows: list[dict]) -> Path:
        folder = self.out_dir / gpu_slug(self.gpu)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.csv"
        extra = sorted({k for r in rows for k in r} - set(COLUMNS))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS + extra)
            w.writeheader()
            for r in rows:
                w.writerow(r)
        return path

    # ------------------------------------------------------------------ C++ benchmarks
    def cpp_bench(self, executable: str, args: Sequence[str] = ()) -> list[dict] | None:
        """Runs a C++ benchmark from the build tree (build/bench/<executable>) that prints CSV
        rows with the columns op,impl,dtype,config,median_ms,flops,bytes; records them. Returns
        None when the executable is not built."""
        bench_dir = Path(os.environ.get("FLASHKERNEL_BENCH_DIR", REPO_ROOT / "build" / "bench"))
        exe = bench_dir / executable
        if not exe.exists():
            print(f"  (skipping {executable}: not built at {exe})", file=sys.stderr)
            return None
        out = subprocess.run([str(exe), *args], capture_output=True, text=True, check=True).stdout
        rows = []
        for line in csv.DictReader(l for l in out.splitlines() if l and not l.startswith("#")):
            ms = float(line["median_ms"])
            flops = float(line["flops"]) if line.get("flops") else None
            nbytes = float(line["bytes"]) if line.get("bytes") else None
            rows.append(self.record(line["op"], line["impl"], line["dtype"], line["config"],
                                    Timing(ms, ms, ms, 0), flops, nbytes))
        return rows


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n== {title} ({len(rows)} rows) ==")
    if not rows:
        return
    header = f"{'impl':<20} {'dtype':<9} {'config':<44} {'median_ms':>11} {'TFLOP/s':>9} {'GB/s':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['impl']:<20} {r['dtype']:<9} {r['config']:<44} {r['median_ms'] or 'n/a':>11} "
              f"{r['tflops'] or '':>9} {r['gbps'] or '':>9}")
