"""The command line (`flashkernel ...` / `python -m flashkernel ...`) and the C++ example's
no-GPU path. Everything here runs without a GPU: the commands that need one are run with
CUDA_VISIBLE_DEVICES="" (no device visible, on any machine) or with the engine replaced by a
stand-in, so the same assertions hold on a GPU machine."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import flashkernel
from flashkernel import _library, cli
from flashkernel._version import checkout_version, version
from flashkernel.bench import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]
PYPROJECT_VERSION = checkout_version(REPO / "pyproject.toml")


def run_cli(*args, env_update=None, cwd=REPO, timeout=240):
    """`python -m flashkernel ARGS` in a child interpreter with this session's environment
    (conftest puts python/ on PYTHONPATH; the library comes from FLASHKERNEL_LIB_DIR or build/)."""
    env = dict(os.environ)
    env.update(env_update or {})
    return subprocess.run([sys.executable, "-m", "flashkernel", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def no_gpu_env():
    return {"CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture
def cuda_untouched(monkeypatch):
    """Fails the test if the command asks whether a GPU is there."""
    def fail():
        raise AssertionError("torch.cuda.is_available() called before the arguments were checked")
    monkeypatch.setattr(torch.cuda, "is_available", fail)


# ------------------------------------------------------------------ version
def test_pyproject_defines_the_version():
    assert PYPROJECT_VERSION and PYPROJECT_VERSION[0].isdigit()


def test_version_of_a_checkout_is_pyprojects():
    assert version() == PYPROJECT_VERSION


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"flashkernel {version()}"


def test_version_from_the_command_line():
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"flashkernel {PYPROJECT_VERSION}"


def test_checkout_version_ignores_other_projects(tmp_path):
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "something-else"\nversion = "9.9.9"\n')
    assert checkout_version(other) is None
    assert checkout_version(tmp_path / "missing.toml") is None
    other.write_text('[project]\nname = "flashkernel"\ndynamic = ["version"]\n')
    assert checkout_version(other) is None
    other.write_text('[project]\nname = "flashkernel"\nversion = "2.3.4"\n\n[tool.x]\nversion = "0"\n')
    assert checkout_version(other) == "2.3.4"


def test_version_falls_back_to_metadata_outside_a_checkout(monkeypatch):
    from importlib import metadata

    import flashkernel._version as v
    monkeypatch.setattr(v, "checkout_version", lambda: None)
    monkeypatch.setattr(metadata, "version", lambda name: "7.8.9" if name == "flashkernel" else "0")
    assert v.version() == "7.8.9"

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)
    monkeypatch.setattr(metadata, "version", not_installed)
    assert v.version() == flashkernel.__version__


# ------------------------------------------------------------------ help
def test_help_from_the_repository_root():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("bench", "info", "generate", "--version"):
        assert command in proc.stdout


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_bench_help_lists_every_benchmark(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in BENCHMARKS:
        assert name in out, f"`flashkernel bench --help` does not name the benchmark {name!r}"


@pytest.mark.parametrize("command", ["bench", "info", "generate"])
def test_every_option_has_help_text(command):
    for action in _subparser(command)._actions:
        assert action.help and action.help.strip(), f"`flashkernel {command}`: {action.option_strings or action.dest} has no help"


def test_generate_help_names_the_sampling_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = capsys.readouterr().out
    for option in ("--max-new-tokens", "--dtype", "--temperature", "--top-k", "--top-p", "--seed", "--model",
                   "--tokens", "--batch", "--sample", "random weights"):
        assert option in out


# ------------------------------------------------------------------ bench
def test_bench_unknown_name_is_reported_before_any_gpu_check(capsys, cuda_untouched):
    assert cli.main(["bench", "no_such_benchmark"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark" in err and "no_such_benchmark" in err
    assert all(name in err for name in BENCHMARKS)


def test_bench_unknown_name_from_the_command_line():
    proc = run_cli("bench", "reduce", "not_an_op", env_update=no_gpu_env())
    assert proc.returncode == 2
    assert "unknown benchmark" in proc.stderr and "not_an_op" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_without_a_gpu_says_so(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("flashkernel.bench.harness.git_commit", lambda *a, **k: "0" * 40)
    assert cli.main(["bench", "reduce"]) == 2
    assert "no CUDA device visible" in capsys.readouterr().err


# ------------------------------------------------------------------ info
def test_info_without_a_gpu(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["info"]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith(f"flashkernel {version()} (torch {torch.__version__}")
    assert "no CUDA GPU is visible" in captured.err
    for still_works in ("CPU reference", "argument checks", "TRITON_INTERPRET=1"):
        assert still_works in captured.err
    assert "cannot be resolved" not in captured.err


def test_info_names_the_kernel_path_of_each_op(capsys, monkeypatch):
    # The GPU branch with a stand-in device (a T4): the library's device query is replaced, the
    # rest (build record, path summary) is the real code.
    import flashkernel
    from flashkernel.ops.vector_add import DeviceInfo

    t4 = DeviceInfo("Tesla T4", (7, 5), 40, 16 << 30, 4 << 20, 64 << 10, 1590000, 5001000, 256)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(flashkernel, "device_info", lambda: t4)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "Tesla T4" in out and "kernel paths on compute capability 7.5" in out
    # This checkout's build (sm_90a and/or sm_80) has no T4 code: say how to build it.
    assert "FLASHKERNEL_CUDA_ARCHS=75" in out


def test_info_from_the_command_line_without_a_visible_gpu():
    proc = run_cli("info", env_update=no_gpu_env())
    assert proc.returncode == 2
    assert "no CUDA GPU is visible" in proc.stderr and "TRITON_INTERPRET=1" in proc.stderr
    assert "cannot be resolved" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.startswith(f"flashkernel {PYPROJECT_VERSION}")


# ------------------------------------------------------------------ generate
@pytest.mark.parametrize("args,message", [
    (["--batch", "0"], "--batch and --max-new-tokens must be >= 1"),
    (["--max-new-tokens", "0"], "--batch and --max-new-tokens must be >= 1"),
    (["--tokens", "1,x"], "--tokens must be comma-separated integers"),
    (["--tokens", ","], "--tokens holds no token id"),
    (["--sample", "--temperature", "0"], "--temperature must be > 0"),
    (["--sample", "--top-k", "-1"], "--top-k must be >= 0"),
    (["--sample", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--model", "/no/such/checkpoint"], "is not a directory"),
    (["--prompt", "hello"], "--prompt needs a tokenizer in --model"),
    (["--stream", "--batch", "2"], "--stream prints one sequence as it is generated and needs --batch 1"),
])
def test_generate_argument_errors_come_before_the_gpu_check(args, message, capsys, cuda_untouched):
    assert cli.main(["generate", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flashkernel generate: ") and message in err


def test_generate_prompt_needs_a_tokenizer_in_the_model_dir(tmp_path, capsys, cuda_untouched):
    assert cli.main(["generate", "--model", str(tmp_path), "--prompt", "hello"]) == 2
    assert "--prompt needs a tokenizer" in capsys.readouterr().err


def test_generate_bad_choice_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["generate", "--dtype", "float32"])
    assert e.value.code == 2
    assert "--dtype" in capsys.readouterr().err


def test_generate_without_a_gpu_says_so(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["generate", "--max-new-tokens", "4"]) == 2
    assert "no CUDA device visible" in capsys.readouterr().err


def test_generate_stream_without_a_gpu_says_so(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["generate", "--stream", "--max-new-tokens", "4"]) == 2
    assert "no CUDA device visible" in capsys.readouterr().err


def test_generate_help_offers_stream(capsys):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    assert "--stream" in capsys.readouterr().out


def test_generate_from_the_command_line_without_a_visible_gpu():
    proc = run_cli("generate", "--max-new-tokens", "4", env_update=no_gpu_env())
    assert proc.returncode == 2
    assert "no CUDA device visible" in proc.stderr and "Traceback" not in proc.stderr


class FakeEngine:
    """Stands in for GPT2Engine: the CLI's flow (load, warm-up, generate, report) without a GPU."""
    loaded = None

    def __init__(self):
        self.last_stats = SimpleNamespace(prefill_ms=1.0, decode_ms=2.0, decode_steps=3, tokens_per_s=4.0)

    @classmethod
    def random(cls, seed=0, *, dtype=torch.float16, **kw):
        cls.loaded = ("random", seed, dtype)
        return cls()

    @classmethod
    def from_pretrained(cls, path, *, dtype=torch.float16, **kw):
        cls.loaded = ("pretrained", str(path), dtype)
        return cls()

    def weight_bytes(self):
        return 2 ** 20

    def generate(self, prompts, max_new_tokens, **kw):
        self.kw = kw
        return [list(p) + [7] * max_new_tokens for p in prompts]

    def generate_stream(self, prompts, max_new_tokens, **kw):
        self.stream_kw = kw
        for _ in range(max_new_tokens):
            yield torch.full((len(prompts),), 7, dtype=torch.long)


@pytest.fixture
def fake_engine(monkeypatch):
    import flashkernel.models

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(flashkernel.models, "GPT2Engine", FakeEngine)
    FakeEngine.loaded = None
    return FakeEngine


def test_generate_on_random_weights_says_so(capsys, fake_engine):
    assert cli.main(["generate", "--max-new-tokens", "3", "--batch", "2", "--dtype", "bfloat16"]) == 0
    captured = capsys.readouterr()
    assert fake_engine.loaded == ("random", 0, torch.bfloat16)
    assert "RANDOM weights" in captured.err and "--model" in captured.err
    assert "[0] 7 7 7" in captured.out and "[1] 7 7 7" in captured.out
    assert "tokens/s" in captured.out


def test_generate_with_a_model_does_not_warn_about_random_weights(tmp_path, capsys, fake_engine):
    assert cli.main(["generate", "--model", str(tmp_path), "--tokens", "1,2", "--max-new-tokens", "2",
                     "--sample", "--temperature", "0.7", "--top-k", "5", "--top-p", "0.9", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert fake_engine.loaded == ("pretrained", str(tmp_path), torch.float16)
    assert "RANDOM" not in captured.err
    assert "[0] 7 7" in captured.out


def test_generate_stream_prints_the_tokens_as_they_come(capsys, fake_engine):
    assert cli.main(["generate", "--stream", "--tokens", "1,2", "--max-new-tokens", "3", "--sample", "--seed",
                     "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[0] 7 7 7\n") and "streamed 3 tokens" in out and "tokens/s" in out


class FakeTokenizer:
    """Byte-level like GPT-2's: token 200 alone is half of a UTF-8 character, 201 completes it."""
    def decode(self, ids):
        return bytes(min(i, 255) if i < 200 else (0xC3 if i == 200 else 0xA9) for i in ids).decode(
            errors="replace")


def test_stream_text_holds_back_a_split_character():
    from flashkernel.models import stream_text

    steps = [torch.tensor([t]) for t in (72, 200, 201, 33)]
    assert list(stream_text(steps, [65], FakeTokenizer())) == ["H", "\u00e9", "!"]
    assert list(stream_text(steps[:2], [65])) == [" 72", " 200"]


# ------------------------------------------------------------------ a checkout without a build
def test_missing_library_is_one_line_saying_what_to_run(tmp_path):
    """`python -m flashkernel` where no library can be found: one line naming the build command,
    no traceback; `import flashkernel` still raises ImportError with the same text."""
    shutil.copytree(Path(flashkernel.__file__).parent, tmp_path / "src" / "flashkernel",
                    ignore=shutil.ignore_patterns("*.so", "_build_info.json", "__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src"), "FLASHKERNEL_LIB_DIR": str(tmp_path / "empty")}
    proc = subprocess.run([sys.executable, "-m", "flashkernel", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "scripts/test.sh" in lines[0] and "pip install --no-build-isolation ." in lines[0]
    proc = subprocess.run([sys.executable, "-c", "import flashkernel"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "ImportError" in proc.stderr and "scripts/test.sh" in proc.stderr


def test_missing_library_message_is_one_line():
    message = _library.missing_library_message()
    assert "\n" not in message and "scripts/test.sh" in message and "FLASHKERNEL_LIB_DIR" in message


# ------------------------------------------------------------------ the C++ example
def _example_binary() -> Path | None:
    """examples/gpt2_generate of the build the loaded library comes from (<build>/python/flashkernel)."""
    path = Path(_library.load()).resolve().parent.parent.parent / "examples" / "gpt2_generate"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _run_example(*args):
    binary = _example_binary()
    if binary is None:
        pytest.skip("examples/gpt2_generate is not in this build (a wheel, or a build without the models op)")
    return subprocess.run([str(binary), *args], env={**os.environ, **no_gpu_env()}, capture_output=True, text=True,
                          timeout=120)


def test_cpp_example_without_a_gpu_says_no_cuda_device():
    proc = _run_example("--max-new-tokens", "4")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], proc.stderr


def test_cpp_example_argument_errors_need_no_gpu():
    proc = _run_example("--batch", "0")
    assert proc.returncode == 2 and "--batch must be >= 1" in proc.stderr
