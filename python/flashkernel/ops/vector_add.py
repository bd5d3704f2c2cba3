"""vector_add and device_info: the skeleton op that goes through every layer."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from flashkernel import _checks, _library


def vector_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a + b elementwise on the GPU (float32, float16, bfloat16; contiguous CUDA tensors)."""
    return torch.ops.flashkernel.vector_add(a, b)


@_library.register_fake("flashkernel::vector_add")
def _vector_add_fake(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _checks.same_shape("flashkernel.vector_add", a, b, "a", "b")
    _checks.same_dtype("flashkernel.vector_add", a, b, "a", "b")
    return torch.empty_like(a)


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: tuple[int, int]
    sm_count: int
    total_memory_bytes: int
    l2_cache_bytes: int
    shared_memory_per_block_optin: int
    peak_sm_clock_khz: int
    peak_memory_clock_khz: int
    memory_bus_width_bits: int

    @property
    def peak_memory_bandwidth_gbps(self) -> float:
        """Datasheet ceiling (DDR: 2 transfers per clock); measured copies reach ~90% of it."""
        return 2.0 * self.peak_memory_clock_khz * 1e3 * self.memory_bus_width_bits / 8 / 1e9


def device_info(device: int | None = None) -> DeviceInfo:
    """Properties of a CUDA device (default: the current one)."""
    fields = torch.ops.flashkernel.device_info(-1 if device is None else int(device))
    name, major, minor, *rest = fields
    return DeviceInfo(name, (major, minor), *rest)
