"""Progress of a benchmark sweep, per configuration, with an estimate of the time left.

A configuration is one (dtype, config) of a benchmark: every impl timed on it, baselines included.
A benchmark module may say how many it will measure (`count_configs(quick)`); the estimate is then
the mean time per finished configuration times the configurations left. Without a count, or once
a sweep measures more than it announced (a C++ benchmark adding its own), the display counts
without an estimate.

On a terminal a tqdm bar stays at the bottom and every row is written above it; elsewhere (a log
file, CI) each row is one plain line carrying the same count and estimate, with no carriage returns.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def format_duration(seconds: float) -> str:
    """12.3 -> '12s', 754 -> '12m34s', 7260 -> '2h01m'."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def eta_seconds(done: int, total: int | None, elapsed: float) -> float | None:
    """Time left after `done` of `total` configurations took `elapsed` seconds; None when unknown."""
    if total is None or done <= 0 or done > total:
        return None
    return elapsed / done * (total - done)


def _rate(row: dict) -> str:
    if row.get("tflops"):
        return f"{row['tflops']} TFLOP/s"
    if row.get("gbps"):
        return f"{row['gbps']} GB/s"
    return ""


def _tqdm_class():
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: plain lines then
        return None
    return tqdm


class SweepProgress:
    """Counts the configurations of one benchmark as its rows arrive and reports each row.

    stream: where the display goes (stderr by default). bar: use a tqdm bar (default: when the
    stream is a terminal and tqdm is importable). clock: seconds, for tests."""

    def __init__(self, name: str, total: int | None, *, stream: TextIO | None = None, bar: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.total = total if total and total > 0 else None
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.started = clock()
        self.rows = 0
        self._keys: set[tuple[str, str]] = set()
        self._current: tuple[str, str] | None = None
        tqdm = _tqdm_class()
        if bar is None:
            bar = tqdm is not None and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = None
        if bar and tqdm is not None:
            self._bar = tqdm(total=self.total, desc=name, unit="config", file=self.stream, leave=True,
                             dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} configs "
                             "[{elapsed}<{remaining}]" if self.total else None)

    @property
    def configs_started(self) -> int:
        return len(self._keys)

    @property
    def configs_done(self) -> int:
        """Configurations finished: every one started but the current."""
        return max(0, len(self._keys) - 1)

    def eta(self) -> float | None:
        total = self.total if self.total is None or self.configs_started <= self.total else None
        return eta_seconds(self.configs_done, total, self.clock() - self.started)

    def status(self) -> str:
        """'config 3/40, 1m12s elapsed, about 15m left' (the parts that are known)."""
        n, elapsed = self.configs_started, self.clock() - self.started
        counted = f"config {n}/{self.total}" if self.total and n <= self.total else f"config {n}"
        parts = [counted, f"{format_duration(elapsed)} elapsed"]
        left = self.eta()
        if left is not None:
            parts.append(f"about {format_duration(left)} left")
        return ", ".join(parts)

    def row(self, row: dict) -> None:
        self.rows += 1
        key = (str(row.get("dtype", "")), str(row.get("config", "")))
        new_config = key not in self._keys
        if new_config:
            self._keys.add(key)
            self._current = key
        line = (f"{row.get('op', ''):<14} {row.get('impl', ''):<20} {row.get('dtype', ''):<9} "
                f"{row.get('config', ''):<40} {row.get('median_ms') or 'n/a':>12} ms  {_rate(row)}").rstrip()
        if self._bar is not None:
            if new_config and self.configs_done > self._bar.n:
                self._bar.update(self.configs_done - self._bar.n)
            self._bar.write(f"  {line}", file=self.stream)
        else:
            print(f"  [{self.status()}] {line}", file=self.stream, flush=True)

    def close(self) -> None:
        """The sweep ended: every configuration started is done."""
        if self._bar is not None:
            if self.configs_started > self._bar.n:
                self._bar.update(self.configs_started - self._bar.n)
            self._bar.close()
            self._bar = None
        else:
            elapsed = format_duration(self.clock() - self.started)
            print(f"  [{self.name}: {self.configs_started} configs, {self.rows} rows in {elapsed}]",
                  file=self.stream, flush=True)
