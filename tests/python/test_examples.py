"""The Python examples (examples/*.py) in a child interpreter: every one answers --help, and without
a GPU (the GPUs hidden from the child) stops with one line and exit status 2 (not a traceback). On a
GPU machine a gpu test runs each one on small shapes."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.py") if not p.name.startswith("_"))
NO_GPU_LINE = "this example needs a CUDA GPU (none is visible)"
# Small shapes for the GPU run: seconds each.
GPU_ARGS = {
    "add_layernorm.py": ["--rows", "256"],
    "attention.py": ["--batch", "1", "--seq", "512", "--kv-heads", "4", "--causal"],
    "gelu_linear.py": ["--m", "256"],
    "gpt2_generate.py": ["--max-new-tokens", "8", "--batch", "2"],
    "paged_kv_cache.py": ["--batch", "2", "--ctx", "300"],
    "patch_hf_gpt2.py": ["--max-new-tokens", "8", "--iters", "1"],
    "reduce.py": ["--numel", "1000000"],
    "rope.py": ["--seq", "128"],
    "vector_add.py": ["--numel", "1000003"],  # not a multiple of the vector width: the scalar tail runs
}


def run_example(path: Path, *args: str, timeout: int = 240, hide_gpus: bool = False) -> subprocess.CompletedProcess:
    """`python examples/NAME.py ARGS` with python/ on PYTHONPATH; FLASHKERNEL_LIB_DIR, when set,
    passes through with the rest of the environment. hide_gpus=True runs it as on a machine without
    a GPU (CUDA_VISIBLE_DEVICES empty), so the no-GPU path is tested on GPU machines too."""
    env = dict(os.environ)
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "python"), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, str(path), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_every_example_is_covered():
    assert {p.name for p in EXAMPLES} == set(GPU_ARGS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_help(path):
    proc = run_example(path, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {path.name}"), proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_without_a_gpu_says_so_in_one_line(path):
    proc = run_example(path, hide_gpus=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1:] == [f"{path.name}: {NO_GPU_LINE}"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


@pytest.mark.gpu
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_runs_on_a_gpu(path):
    if path.name == "patch_hf_gpt2.py" and importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed")
    proc = run_example(path, *GPU_ARGS[path.name], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    if path.name != "gpt2_generate.py":
        assert "max |" in proc.stdout, proc.stdout
    else:
        assert "RANDOM weights" in proc.stdout and "tokens/s" in proc.stdout, proc.stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_a_wrong_argument_is_reported_before_the_gpu_check(path):
    proc = run_example(path, "--no-such-option", hide_gpus=True)
    assert proc.returncode == 2, proc.stderr
    assert f"{path.name}: error: unrecognized arguments: --no-such-option" in proc.stderr, proc.stderr
    assert NO_GPU_LINE not in proc.stderr and "Traceback" not in proc.stderr


def test_gpt2_example_streams_one_sequence():
    path = REPO / "examples" / "gpt2_generate.py"
    assert "--stream" in run_example(path, "--help").stdout
    proc = run_example(path, "--stream", hide_gpus=True)
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1:] == [f"{path.name}: {NO_GPU_LINE}"], proc.stderr
    proc = run_example(path, "--stream", "--batch", "2", hide_gpus=True)
    assert proc.returncode == 2 and "--stream prints one sequence and needs --batch 1" in proc.stderr, proc.stderr
    assert NO_GPU_LINE not in proc.stderr


def test_add_layernorm_example_offers_rms_norm():
    proc = run_example(REPO / "examples" / "add_layernorm.py", "--help")
    assert "--rms" in proc.stdout and "add_rms_norm" in proc.stdout


@pytest.mark.gpu
def test_rms_norm_example_runs_on_a_gpu():
    proc = run_example(REPO / "examples" / "add_layernorm.py", "--rms", "--rows", "256", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "add_rms_norm rows=256" in proc.stdout and "max |" in proc.stdout, proc.stdout
