"""The benchmark progress display (flashkernel/bench/progress.py) on the CPU: a fake sequence of
results rows, a fake clock, and both outputs (plain lines off a terminal, a tqdm bar on one)."""
from __future__ import annotations

import importlib
import io
import types

import pytest

from flashkernel.bench import BENCHMARKS
from flashkernel.bench.progress import SweepProgress, eta_seconds, format_duration
from flashkernel.cli import planned_configs


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def rows(configs, impls=("flashkernel_cuda", "torch_eager")):
    """Rows as the harness records them: every impl of a configuration, configuration after configuration."""
    for dtype, config in configs:
        for impl in impls:
            yield {"op": "demo", "impl": impl, "dtype": dtype, "config": config, "median_ms": "1.000000",
                   "tflops": "", "gbps": "2000.00"}


def test_format_duration():
    assert format_duration(0) == "0s"
    assert format_duration(12.4) == "12s"
    assert format_duration(754) == "12m34s"
    assert format_duration(7260) == "2h01m"
    assert format_duration(-3) == "0s"


def test_eta_is_the_mean_time_per_finished_configuration_times_those_left():
    assert eta_seconds(2, 10, 30.0) == pytest.approx(120.0)
    assert eta_seconds(0, 10, 5.0) is None       # nothing finished yet: no estimate
    assert eta_seconds(3, None, 5.0) is None     # total unknown
    assert eta_seconds(11, 10, 5.0) is None      # more than announced: the total was wrong


def test_plain_lines_off_a_terminal_count_configurations_and_estimate_the_time_left():
    clock, out = FakeClock(), io.StringIO()
    progress = SweepProgress("demo", 4, stream=out, clock=clock)
    configs = [("float16", f"n={n}") for n in (1, 2, 3, 4)]
    for i, row in enumerate(rows(configs)):
        clock.t += 10.0  # every row takes 10 s, so every configuration 20 s
        progress.row(row)
    progress.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 8 + 1
    assert lines[0].startswith("  [config 1/4, 10s elapsed]")          # no configuration finished yet
    assert lines[2].startswith("  [config 2/4, 30s elapsed, about 1m30s left]")  # 1 done in 30 s, 3 left
    assert lines[6].startswith("  [config 4/4, 1m10s elapsed, about 23s left]")
    assert "flashkernel_cuda" in lines[0] and "n=1" in lines[0] and "2000.00 GB/s" in lines[0]
    assert lines[-1] == "  [demo: 4 configs, 8 rows in 1m20s]"


def test_a_configuration_is_a_dtype_and_config_pair_and_repeats_do_not_count_twice():
    out = io.StringIO()
    progress = SweepProgress("demo", None, stream=out, clock=FakeClock())
    configs = [("float16", "n=1"), ("bfloat16", "n=1"), ("float16", "n=1")]  # a C++ benchmark's rows reuse configs
    for row in rows(configs):
        progress.row(row)
    assert progress.configs_started == 2 and progress.rows == 6
    assert "config 2," in out.getvalue().splitlines()[-1] and "left" not in out.getvalue()


def test_more_configurations_than_announced_drop_the_estimate_not_the_run():
    clock, out = FakeClock(), io.StringIO()
    progress = SweepProgress("demo", 1, stream=out, clock=clock)
    for row in rows([("float16", "n=1"), ("float16", "n=2")]):
        clock.t += 1.0
        progress.row(row)
    assert progress.eta() is None
    assert out.getvalue().splitlines()[-1].startswith("  [config 2, ")


def test_a_bar_on_a_terminal_counts_configurations_and_writes_each_row_above_it():
    pytest.importorskip("tqdm")
    out = FakeTerminal()
    progress = SweepProgress("demo", 3, stream=out)
    assert progress._bar is not None
    for row in rows([("float16", "n=1"), ("float16", "n=2"), ("float16", "n=3")]):
        progress.row(row)
    assert progress._bar.n == 2  # the third configuration is still running
    progress.close()
    text = out.getvalue()
    assert "3/3 configs" in text
    assert text.count("flashkernel_cuda") == 3 and text.count("torch_eager") == 3


def test_no_bar_when_asked_or_off_a_terminal():
    assert SweepProgress("demo", 3, stream=io.StringIO())._bar is None
    assert SweepProgress("demo", 3, stream=FakeTerminal(), bar=False)._bar is None


def test_planned_configs_reads_a_modules_count():
    assert planned_configs(types.SimpleNamespace(count_configs=lambda quick: 5 if quick else 50), True) == 5
    assert planned_configs(types.SimpleNamespace(), False) is None
    assert planned_configs(types.SimpleNamespace(count_configs=lambda quick: 0), False) is None

    def broken(quick):
        raise RuntimeError("no GPU")

    assert planned_configs(types.SimpleNamespace(count_configs=broken), False) is None


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_benchmark_announces_its_configurations(name):
    module = importlib.import_module(BENCHMARKS[name])
    full, quick = planned_configs(module, False), planned_configs(module, True)
    assert full and quick and quick <= full
