"""flash_attention: softmax(scale * q k^T [causal]) v without materializing the scores
(torch.ops.flashkernel.flash_attention)."""
from __future__ import annotations

import torch

from flashkernel import _checks, _library

_OP = "flashkernel.flash_attention"
SUPPORTED_HEAD_DIMS = (64, 128)
BACKENDS = ("auto", "sm80", "sm90")


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None, return_lse: bool = False, backend: str = "auto"):
    """Attention forward on the GPU.

    q: [B, Hq, Nq, d]; k, v: [B, Hkv, Nk, d] with Hq % Hkv == 0 (GQA/MQA); float16 or bfloat16;
    d in {64, 128}; any strides with a contiguous last dim (a [B, N, H, d] tensor's
    .transpose(1, 2) works without a copy). scale defaults to 1/sqrt(d). causal: query i sees keys
    j <= i + Nk - Nq (bottom-right aligned, SDPA's is_causal when Nq == Nk); a row that sees no key
    gets output 0 and LSE -inf. Returns out, or (out, lse) with lse [B, Hq, Nq] float32 (natural
    log) when return_lse. backend: "auto" (the Hopper TMA + wgmma kernel on sm_90 GPUs, the
    portable mma.sync kernel elsewhere), "sm80" or "sm90" to force one.
    """
    out, lse = torch.ops.flashkernel.flash_attention(q, k, v, causal, scale, return_lse, backend)
    return (out, lse) if return_lse else out


def check_arguments(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """The shape/dtype rules shared by the fake implementation and the Triton twin (the C++ op
    applies the same ones), with errors naming the argument."""
    _checks.dim(op, q, 4, "q", "[batch, heads_q, seq_q, head_dim]")
    _checks.dim(op, k, 4, "k", "[batch, heads_kv, seq_k, head_dim]")
    _checks.dim(op, v, 4, "v", "[batch, heads_kv, seq_k, head_dim]")
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: argument 'q' has unsupported dtype {q.dtype}; expected float16 or bfloat16")
    _checks.same_dtype(op, q, k, "q", "k")
    _checks.same_dtype(op, q, v, "q", "v")
    _checks.same_shape(op, k, v, "k", "v")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"{op}: argument 'k' must have the batch size of 'q' ({q.shape[0]}), got {k.shape[0]}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"{op}: argument 'k' must have the head_dim of 'q' ({q.shape[3]}), got {k.shape[3]}")
    if q.shape[3] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"{op}: argument 'q' must have head_dim 64 or 128, got {q.shape[3]}")
    if k.shape[1] < 1 or q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"{op}: argument 'q' must have a number of heads ({q.shape[1]}) that is a multiple of "
                         f"the heads of 'k' ({k.shape[1]})")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.shape[-1] > 1 and t.stride(-1) != 1:
            raise ValueError(f"{op}: argument '{name}' must have a contiguous last dimension (stride 1), got "
                             f"strides {t.stride()}")


@_library.register_fake("flashkernel::flash_attention")
def _flash_attention_fake(q, k, v, causal=False, scale=None, return_lse=False, backend="auto"):
    check_arguments(_OP, q, k, v)
    _checks.one_of(_OP, backend, BACKENDS, "backend")
    out = q.new_empty(q.shape)
    lse = q.new_empty((q.shape[0], q.shape[1], q.shape[2]) if return_lse else (0,), dtype=torch.float32)
    return out, lse
