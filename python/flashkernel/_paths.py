"""Which kernels run on a GPU, in words, for `flashkernel info`: whether the build has code for
the GPU at all, and per op the path its dispatch takes (src/<op>/*.cu and the README's "Which
card, which path" table). The thresholds are the library's own: tensor-core ops need compute
capability 8.0 (detail::require_compute_capability), the Hopper kernels need 9.x and sm_90a code
in the build."""
from __future__ import annotations

import json
import os
from pathlib import Path

TENSOR_CORE_MAJOR = 8  # flash_attention, gelu_linear and paged decode's mma variant: sm_80 code


def built_archs(library: str | os.PathLike) -> list[str] | None:
    """FLASHKERNEL_CUDA_ARCHS of the build next to `library` (e.g. ["80", "90a"]); None when the
    build record does not say (an older build)."""
    try:
        archs = json.loads(Path(library).with_name("_build_info.json").read_text()).get("cuda_archs")
    except (OSError, ValueError, AttributeError):
        return None
    return [a.strip() for a in archs.split(";") if a.strip()] if isinstance(archs, str) and archs else None


def _arch_number(arch: str) -> tuple[int, bool]:
    """"90a" -> (90, True): the compute capability number and whether it is arch-specific (runs on
    exactly that capability; plain ones also carry PTX that newer GPUs compile)."""
    specific = arch.endswith("a")
    return int(arch.rstrip("a")), specific


def build_runs_on(capability: tuple[int, int], archs: list[str]) -> bool:
    """Whether a build for `archs` has code this GPU can run: machine code of its own major
    version at or below its capability, or PTX (plain archs) below it."""
    cc = capability[0] * 10 + capability[1]
    for arch in archs:
        try:
            n, specific = _arch_number(arch)
        except ValueError:  # "native", "all", ...: CMake chose for the build machine; assume yes
            return True
        if (n == cc if specific else n <= cc):
            return True
    return False


def kernel_paths(capability: tuple[int, int], archs: list[str] | None) -> list[tuple[str, str]]:
    """(op, path) per op for a GPU of `capability` and a build for `archs` (None: unknown)."""
    major, minor = capability
    simt = "CUDA cores, 16-byte loads"
    if major < TENSOR_CORE_MAJOR:
        missing = f"not available: needs compute capability {TENSOR_CORE_MAJOR}.0 (this GPU is {major}.{minor})"
        attention = gelu = missing
        decode = "CUDA cores (split-KV, log-sum-exp combine)"
    else:
        hopper = major == 9 and (archs is None or "90a" in archs)
        if hopper:
            attention = "TMA + wgmma, warp-specialized, persistent (sm_90a)"
            gelu = ("M <= 64: mma.sync weight streaming; larger M: TMA + wgmma, warp-specialized (sm_90a), "
                    "or mma.sync tiles when few tiles")
        else:
            attention = "mma.sync + ldmatrix + cp.async (sm_80)"
            gelu = "M <= 64: mma.sync weight streaming; larger M: mma.sync tiles (sm_80)"
        decode = "CUDA cores for 1-2 query heads per KV head, mma.sync for larger groups"
    return [
        ("flash_attention", attention),
        ("gelu_linear", gelu),
        ("paged_decode_attention", decode),
        ("kv_cache append/gather/copy", simt),
        ("add_layernorm / add_rms_norm", simt),
        ("reduce_sum / reduce_max", simt),
        ("rope / rope_fused / rope_cache", simt),
        ("vector_add", simt),
    ]


def describe(capability: tuple[int, int], archs: list[str] | None) -> str:
    """The lines `flashkernel info` prints about the kernel paths."""
    major, minor = capability
    built = ";".join(archs) if archs else "unknown"
    lines = [f"kernel paths on compute capability {major}.{minor} (build: FLASHKERNEL_CUDA_ARCHS={built}):"]
    if archs is not None and not build_runs_on(capability, archs):
        lines.append(f"  this build has no code for compute capability {major}.{minor}: rebuild with "
                     f"FLASHKERNEL_CUDA_ARCHS={major}{minor} (or add it to the list)")
        return "\n".join(lines)
    width = max(len(op) for op, _ in kernel_paths(capability, archs))
    lines += [f"  {op:<{width}}  {path}" for op, path in kernel_paths(capability, archs)]
    return "\n".join(lines)
