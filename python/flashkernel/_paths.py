"""Which kernels run on a GPU, in words, for `flashkernel info`: whether the build has code for
the GPU at all, and per op the path its dispatch takes (src/<op>/*.cu and the README's "Which
card, which path" table). The rules are the library's own (src/common/device.cpp): dispatch uses
the newest built architecture the GPU runs, or FLASHKERNEL_FORCE_ARCH; the tensor-core ops need
7.5 and bf16 there needs 8.0 (detail::require_tensor_core_dtype); the Hopper kernels need 9.x and
sm_90a code in the build."""
from __future__ import annotations

import json
import os
from pathlib import Path

TENSOR_CORE_MIN = (7, 5)  # flash_attention, gelu_linear: fp16 from sm_75 (mma.sync m16n8k8)
BF16_TENSOR_CORE_MIN = (8, 0)
FORCE_ARCH_VALUES = ("75", "80", "86", "89")  # FLASHKERNEL_FORCE_ARCH (tests only)


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
    exactly that capability; plain ones also carry PTX that newer GPUs compile). CMake's suffixes
    ("75-virtual": PTX only, "80-real": machine code only) do not change where the code runs
    from, so they are dropped."""
    arch = arch.split("-")[0]
    specific = arch.endswith("a")
    return int(arch.rstrip("a")), specific


def build_runs_on(capability: tuple[int, int], archs: list[str]) -> bool:
    """Whether a build for `archs` has code this GPU can run: machine code of its own major
    version at or below its capability, or PTX (plain archs) below it."""
    return dispatch_capability(capability, archs) is not None


def dispatch_capability(capability: tuple[int, int], archs: list[str] | None,
                        forced: str | None = None) -> tuple[int, int] | None:
    """The compute capability the library dispatches as (detail::current_compute_capability): the
    newest built architecture this GPU runs, or FLASHKERNEL_FORCE_ARCH (`forced`) below it; the
    GPU's own when the build list is unknown; None when the build has no code for the GPU."""
    cc = capability[0] * 10 + capability[1]
    best = None
    for arch in archs or []:
        try:
            n, specific = _arch_number(arch)
        except ValueError:  # "native", "all", ...: CMake chose for the build machine; assume yes
            best = cc
            break
        if (n == cc if specific else n <= cc) and (best is None or n > best):
            best = n
    if not archs:
        best = cc
    if best is None:
        return None
    if forced and forced in FORCE_ARCH_VALUES and int(forced) <= best:
        best = int(forced)
    return best // 10, best % 10


def hopper_kernels_run(capability: tuple[int, int], archs: list[str] | None) -> bool:
    """Whether the Hopper (sm_90a) kernels can run: a 9.x GPU and sm_90a code in the build (an
    unknown build list counts as yes)."""
    return capability[0] == 9 and (archs is None or any(a.split("-")[0] == "90a" for a in archs))


def kernel_paths(capability: tuple[int, int], archs: list[str] | None) -> list[tuple[str, str]]:
    """(op, path) per op for a GPU of `capability` and a build for `archs` (None: unknown)."""
    major, minor = capability
    simt = "CUDA cores, 16-byte loads"
    if capability < TENSOR_CORE_MIN:
        missing = f"not available: needs compute capability 7.5 (this GPU is {major}.{minor})"
        attention = gelu = missing
        decode = "CUDA cores (split-KV, log-sum-exp combine)"
    elif capability < BF16_TENSOR_CORE_MIN:
        fp16_only = "float16 only (bfloat16 needs 8.0): "
        attention = fp16_only + "mma.sync m16n8k8 + ldmatrix, synchronous copies, tiles within 64 KiB (sm_75)"
        gelu = fp16_only + "M <= 32: mma.sync weight streaming; larger M: 64x64 mma.sync tiles (sm_75)"
        decode = "CUDA cores (split-KV, log-sum-exp combine)"
    else:
        hopper = hopper_kernels_run(capability, archs)
        if hopper:
            attention = ("TMA + wgmma, warp-specialized, persistent (sm_90a) for dense head_dim 64/128; other head "
                         "dims, window, softcap and varlen: mma.sync + ldmatrix + cp.async (sm_80)")
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


def describe(capability: tuple[int, int], archs: list[str] | None, forced: str | None = None) -> str:
    """The lines `flashkernel info` prints about the kernel paths; `forced`: the value of
    FLASHKERNEL_FORCE_ARCH, if set."""
    major, minor = capability
    built = ";".join(archs) if archs else "unknown"
    lines = [f"kernel paths on compute capability {major}.{minor} (build: FLASHKERNEL_CUDA_ARCHS={built}):"]
    dispatch = dispatch_capability(capability, archs, forced)
    if dispatch is None:
        lines.append(f"  this build has no code for compute capability {major}.{minor}: rebuild with "
                     f"FLASHKERNEL_CUDA_ARCHS={major}{minor} (or add it to the list)")
        return "\n".join(lines)
    if forced:
        if forced not in FORCE_ARCH_VALUES:
            lines.append(f"  FLASHKERNEL_FORCE_ARCH={forced} is invalid (75, 80, 86 or 89): the library refuses to run")
        else:
            lines.append(f"  override active: FLASHKERNEL_FORCE_ARCH={forced} (tests only): dispatch runs as "
                         f"sm_{dispatch[0]}{dispatch[1]}, with that architecture's shared-memory limit")
    elif dispatch != capability:
        lines.append(f"  dispatch runs as sm_{dispatch[0]}{dispatch[1]}: the newest code in this build for this GPU "
                     f"(PTX is JIT-compiled by the driver)")
    paths = kernel_paths(dispatch, archs)
    width = max(len(op) for op, _ in paths)
    lines += [f"  {op:<{width}}  {path}" for op, path in paths]
    return "\n".join(lines)
