"""`flashkernel info`'s kernel-path summary (flashkernel._paths): pure functions of the compute
capability and the build's architectures, checked on the CPU for the cards the library targets."""
import json

from flashkernel import _paths


def paths(capability, archs):
    return dict(_paths.kernel_paths(capability, archs))


def test_hopper_with_sm90a_code_takes_the_wgmma_kernels():
    p = paths((9, 0), ["80", "90a"])
    assert "wgmma" in p["flash_attention"] and "sm_90a" in p["flash_attention"]
    assert "wgmma" in p["gelu_linear"]


def test_hopper_without_sm90a_code_and_ampere_take_the_sm80_kernels():
    for capability, archs in [((9, 0), ["80"]), ((8, 0), ["80", "90a"]), ((8, 9), ["80"])]:
        p = paths(capability, archs)
        assert "sm_80" in p["flash_attention"] and "wgmma" not in p["flash_attention"], (capability, archs)
        assert "wgmma" not in p["gelu_linear"], (capability, archs)


def test_a_t4_is_told_it_has_fp16_tensor_cores_and_no_bf16():
    p = paths((7, 5), ["75"])
    for op in ("flash_attention", "gelu_linear"):
        assert p[op].startswith("float16 only (bfloat16 needs 8.0)") and "sm_75" in p[op], p[op]
    assert "mma" not in p["paged_decode_attention"]
    assert p["vector_add"].startswith("CUDA cores")
    p = paths((7, 0), ["70"])
    assert p["flash_attention"] == "not available: needs compute capability 7.5 (this GPU is 7.0)"


def test_dispatch_follows_the_newest_built_code_and_the_override():
    assert _paths.dispatch_capability((9, 0), ["80", "90a"]) == (9, 0)
    assert _paths.dispatch_capability((8, 9), ["80", "90a"]) == (8, 0)
    assert _paths.dispatch_capability((9, 0), ["75-virtual"]) == (7, 5)  # compute_75 PTX, JIT-compiled
    assert _paths.dispatch_capability((9, 0), ["80", "90a"], "75") == (7, 5)
    assert _paths.dispatch_capability((9, 0), ["75-virtual"], "86") == (7, 5)  # the library refuses this one
    assert _paths.dispatch_capability((7, 5), ["80", "90a"]) is None
    text = _paths.describe((9, 0), ["75-virtual"], "75")
    assert "override active: FLASHKERNEL_FORCE_ARCH=75" in text and "sm_75" in text


def test_build_runs_on():
    assert _paths.build_runs_on((9, 0), ["80", "90a"])
    assert _paths.build_runs_on((8, 6), ["80", "90a"])  # sm_80 machine code runs on 8.6
    assert _paths.build_runs_on((10, 0), ["80"])        # PTX of a plain arch compiles for newer GPUs
    assert not _paths.build_runs_on((7, 5), ["80", "90a"])
    assert not _paths.build_runs_on((10, 0), ["90a"])   # arch-specific code runs on exactly 9.0
    assert _paths.build_runs_on((7, 5), ["75"])
    assert _paths.build_runs_on((7, 5), ["native"])     # CMake chose for the build machine


def test_describe_says_to_rebuild_when_the_build_has_no_code_for_the_gpu():
    text = _paths.describe((7, 5), ["80", "90a"])
    assert "no code for compute capability 7.5" in text and "FLASHKERNEL_CUDA_ARCHS=75" in text
    text = _paths.describe((9, 0), ["80", "90a"])
    assert text.splitlines()[0] == "kernel paths on compute capability 9.0 (build: FLASHKERNEL_CUDA_ARCHS=80;90a):"
    assert len(text.splitlines()) == 1 + len(_paths.kernel_paths((9, 0), ["80", "90a"]))


def test_built_archs_reads_the_build_record(tmp_path):
    lib = tmp_path / "_flashkernel_ops.so"
    assert _paths.built_archs(lib) is None  # no record
    (tmp_path / "_build_info.json").write_text(json.dumps({"torch": "2.11.0", "cuda_archs": "80;90a"}))
    assert _paths.built_archs(lib) == ["80", "90a"]
    (tmp_path / "_build_info.json").write_text(json.dumps({"torch": "2.11.0"}))  # an older build
    assert _paths.built_archs(lib) is None
