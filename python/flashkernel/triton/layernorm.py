"""Triton twins of add_layernorm and add_rms_norm: one program per row, the whole row in registers."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from flashkernel import _checks
from flashkernel.ops.layernorm import check_args

_OP = "flashkernel.triton.add_layernorm"
_OP_RMS = "flashkernel.triton.add_rms_norm"


@triton.jit
def _add_layernorm_kernel(x_ptr, r_ptr, b_ptr, w_ptr, lb_ptr, out_ptr, sum_ptr, cols, eps,
                          HAS_R: tl.constexpr, HAS_B: tl.constexpr, HAS_W: tl.constexpr, HAS_LB: tl.constexpr,
                          RMS: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < cols
    s = tl.load(x_ptr + row * cols + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_R:
        s += tl.load(r_ptr + row * cols + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_B:
        s += tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # The sum is rounded to the tensor dtype once; the statistics use the rounded value.
    s_t = s.to(sum_ptr.dtype.element_ty)
    tl.store(sum_ptr + row * cols + offs, s_t, mask=mask)
    s = tl.where(mask, s_t.to(tl.float32), 0.0)
    if RMS:
        d = s
    else:
        d = tl.where(mask, s - tl.sum(s, axis=0) / cols, 0.0)
    var = tl.sum(d * d, axis=0) / cols
    o = d * (1.0 / tl.sqrt(var + eps))
    if HAS_W:
        o *= tl.load(w_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    if HAS_LB:
        o += tl.load(lb_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * cols + offs, o.to(out_ptr.dtype.element_ty), mask=mask)


def _launch(op, x, residual, bias, weight, ln_bias, eps, rms):
    check_args(op, x, residual, bias, weight, ln_bias)
    for name, t in (("x", x), ("residual", residual)):
        if t is not None:
            _checks.contiguous(op, t, name)
    if not eps > 0:
        raise ValueError(f"{op}: argument 'eps' must be > 0, got {eps}")
    out, s = torch.empty_like(x), torch.empty_like(x)
    cols = x.shape[-1]
    rows = x.numel() // cols
    if rows:
        dummy = x
        _add_layernorm_kernel[(rows,)](
            x, residual if residual is not None else dummy, bias if bias is not None else dummy,
            weight if weight is not None else dummy, ln_bias if ln_bias is not None else dummy, out, s, cols, eps,
            HAS_R=residual is not None, HAS_B=bias is not None, HAS_W=weight is not None,
            HAS_LB=ln_bias is not None, RMS=rms, BLOCK=triton.next_power_of_2(cols))
    return out, s


def add_layernorm(x: torch.Tensor, residual: torch.Tensor | None = None, *, bias: torch.Tensor | None = None,
                  weight: torch.Tensor | None = None, ln_bias: torch.Tensor | None = None,
                  eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Same signature and semantics as flashkernel.add_layernorm."""
    return _launch(_OP, x, residual, bias, weight, ln_bias, eps, rms=False)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor | None = None, *, weight: torch.Tensor | None = None,
                 eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Same signature and semantics as flashkernel.add_rms_norm."""
    return _launch(_OP_RMS, x, residual, None, weight, None, eps, rms=True)
