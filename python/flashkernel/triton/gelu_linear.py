"""Triton twin of gelu_linear: GeLU(x @ weight^T + bias), the epilogue fused into an autotuned
tiled matmul (tl.dot; Triton lowers it to wgmma on Hopper, mma.sync on Ampere).

With FLASHKERNEL_TRITON_AUTOTUNE=0 (see _autotune.py) one fixed configuration per M family (small M
<= 64, large M) runs instead of the autotuner; `gelu_linear_with_config` runs one given
configuration of LARGE_M_CONFIGS / SMALL_M_CONFIGS (how the tests cover each)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
import triton.testing

from flashkernel import _checks
from flashkernel.ops.gelu_linear import check_args
from flashkernel.triton._autotune import TunedLauncher, autotune_enabled

_OP = "flashkernel.triton.gelu_linear"


@triton.jit
def _gelu(v, APPROX_TANH: tl.constexpr):
    if APPROX_TANH:
        # tanh(u) = 1 - 2 / (exp(2u) + 1): accurate where 1 + tanh is formed. |u| <= 20 keeps exp
        # finite (tanh(20) is 1 in fp32 anyway).
        u = 0.7978845608028654 * (v + 0.044715 * v * v * v)
        u = tl.minimum(tl.maximum(u, -20.0), 20.0)
        t = 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0)
        return 0.5 * v * (1.0 + t)
    else:
        return 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))


@triton.jit
def _k_step(acc, x_ptrs, w_ptrs, m_ok, n_ok, offs_k, k0, K):
    k_ok = offs_k + k0 < K
    a = tl.load(x_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
    b = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
    return tl.dot(a, b, acc)


@triton.jit
def _gelu_linear_kernel(x_ptr, w_ptr, b_ptr, out_ptr, M, N, K, M_BUCKET,  # M_BUCKET: autotune key only
                        HAS_BIAS: tl.constexpr, APPROX_TANH: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        GROUP_M: tl.constexpr, INTERPRET_LOOP: tl.constexpr = False):
    # Grouped raster: GROUP_M row-blocks sweep the column-blocks together so W stays in L2.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * num_pid_n
    first_m = (pid // group_size) * GROUP_M
    rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % rows
    pid_n = (pid % group_size) // rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N
    x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * K + offs_k[None, :]
    # W is [N, K]; this is the [BLOCK_K, BLOCK_N] block of W^T.
    w_ptrs = w_ptr + offs_n[None, :].to(tl.int64) * K + offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if INTERPRET_LOOP:
        # The CPU interpreter (numpy 2) cannot take a runtime bound in range(); a while loop works
        # there, but on the GPU only a for loop gets software-pipelined.
        k0 = 0
        while k0 < K:
            acc = _k_step(acc, x_ptrs + k0, w_ptrs + k0, m_ok, n_ok, offs_k, k0, K)
            k0 += BLOCK_K
    else:
        for k0 in range(0, K, BLOCK_K):
            acc = _k_step(acc, x_ptrs + k0, w_ptrs + k0, m_ok, n_ok, offs_k, k0, K)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    y = _gelu(acc, APPROX_TANH)
    out_ptrs = out_ptr + offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
    tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _config(bm, bn, bk, stages, warps):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8},
                         num_stages=stages, num_warps=warps)


# Large-M tiles (compute-bound) and skinny tiles for decode-sized M (weight streaming).
LARGE_M_CONFIGS = [
    _config(128, 256, 64, 3, 8),
    _config(128, 128, 64, 4, 8),
    _config(128, 128, 64, 4, 4),
    _config(64, 128, 64, 4, 4),
    _config(64, 64, 64, 4, 4),
]
SMALL_M_CONFIGS = [
    _config(16, 64, 128, 4, 4),
    _config(16, 32, 256, 3, 4),
    _config(32, 64, 128, 4, 4),
    _config(64, 64, 64, 4, 4),
]


_SMALL_M_MAX = 64  # M up to this uses the small-M family


def _prune(configs, named_args, **kwargs):
    # Only the family that can win for this M: halves the tuning time per shape.
    family = SMALL_M_CONFIGS if named_args["M"] <= _SMALL_M_MAX else LARGE_M_CONFIGS
    keep = [c for c in configs if any(c is f for f in family)]
    return keep or configs


def _bucket_m(m: int) -> int:
    """Autotuning key for M: powers of two, so a serving loop with varying batch sizes tunes a
    handful of times, not once per M."""
    return 1 << max(0, (int(m) - 1).bit_length())


_tuned_kernel = triton.autotune(
    configs=LARGE_M_CONFIGS + SMALL_M_CONFIGS,
    key=["M_BUCKET", "N", "K", "HAS_BIAS", "APPROX_TANH"],
    prune_configs_by={"early_config_prune": _prune},
    # Short tuning runs (default is 25 + 100 ms per config): shapes are tuned once per process.
    do_bench=lambda kernel_call, quantiles: triton.testing.do_bench(kernel_call, warmup=5, rep=20,
                                                                    quantiles=quantiles),
)(_gelu_linear_kernel)

_launch_tuned = TunedLauncher(_tuned_kernel)

# Without autotuning (FLASHKERNEL_TRITON_AUTOTUNE=0): one configuration per M family.
FIXED_SMALL_M_CONFIG = SMALL_M_CONFIGS[0]
FIXED_LARGE_M_CONFIG = LARGE_M_CONFIGS[1]

# Under TRITON_INTERPRET=1 (CPU) tuning would run every config through the interpreter: one small
# fixed config instead.
_INTERPRET_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4}


def gelu_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                approximate: str = "none") -> torch.Tensor:
    """Same signature and semantics as flashkernel.gelu_linear."""
    return _forward(x, weight, bias, approximate, None)


def gelu_linear_with_config(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, config: triton.Config,
                            *, approximate: str = "none") -> torch.Tensor:
    """gelu_linear with the given configuration (one of LARGE_M_CONFIGS / SMALL_M_CONFIGS, any M)
    instead of the autotuner's choice. Under TRITON_INTERPRET=1 its block sizes run on the CPU."""
    return _forward(x, weight, bias, approximate, config)


def _forward(x, weight, bias, approximate, config):
    check_args(_OP, x, weight, bias, approximate)
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is not None:
            _checks.contiguous(_OP, t, name)
            _checks.same_device(_OP, x, t, "x", name)
    n, k = weight.shape
    out = x.new_empty((*x.shape[:-1], n))
    m = x.numel() // k
    if m == 0:
        return out
    b = bias if bias is not None else weight  # any pointer; never read without HAS_BIAS
    flags = dict(HAS_BIAS=bias is not None, APPROX_TANH=approximate == "tanh")
    if x.device.type == "cpu":  # only reachable under the interpreter
        meta = dict(_INTERPRET_CONFIG if config is None else config.kwargs, INTERPRET_LOOP=True)
    elif config is None and autotune_enabled():
        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
        m_bucket = _bucket_m(m)
        key = (x.device.index, x.dtype, m_bucket, n, k, flags["HAS_BIAS"], flags["APPROX_TANH"])
        _launch_tuned(key, grid, x, weight, b, out, m, n, k, m_bucket, **flags)
        return out
    else:
        if config is None:
            config = FIXED_SMALL_M_CONFIG if m <= _SMALL_M_MAX else FIXED_LARGE_M_CONFIG
        meta = config.all_kwargs()
    grid = (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
    _gelu_linear_kernel[grid](x, weight, b, out, m, n, k, _bucket_m(m), **flags, **meta)
    return out
