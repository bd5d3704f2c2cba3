"""flash_attention: softmax(scale * q k^T [masks]) v without materializing the scores
(torch.ops.flashkernel.flash_attention), and flash_attention_varlen for packed batches of
sequences of different lengths (torch.ops.flashkernel.flash_attention_varlen)."""
from __future__ import annotations

import math

import torch

from flashkernel import _checks, _library

_OP = "flashkernel.flash_attention"
_OP_VARLEN = "flashkernel.flash_attention_varlen"
SUPPORTED_HEAD_DIMS = (32, 64, 80, 96, 128, 256)
BACKENDS = ("auto", "sm80", "sm90")


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                    scale: float | None = None, window: tuple[int, int] | None = None,
                    softcap: float | None = None, return_lse: bool = False, backend: str = "auto"):
    """Attention forward on the GPU.

    q: [B, Hq, Nq, d]; k, v: [B, Hkv, Nk, d] with Hq % Hkv == 0 (GQA/MQA); float16 or bfloat16;
    d in {32, 64, 80, 96, 128, 256}; any strides with a contiguous last dim (a [B, N, H, d]
    tensor's .transpose(1, 2) works without a copy). scale defaults to 1/sqrt(d). Query i sits at
    key position i + Nk - Nq (bottom-right alignment). causal: it sees keys j <= i + Nk - Nq
    (SDPA's is_causal when Nq == Nk). window=(left, right), FlashAttention's sliding window: keys
    i + Nk - Nq - left <= j <= i + Nk - Nq + right, a negative bound meaning unbounded on that side
    (causal sets right to 0). softcap=c > 0: every scaled score s becomes c * tanh(s / c) (Gemma 2)
    before the softmax. A row that sees no key gets output 0 and LSE -inf. Returns out, or
    (out, lse) with lse [B, Hq, Nq] float32 (natural log of the row's sum of exp of its final
    scores) when return_lse. backend: "auto" (the Hopper TMA + wgmma kernel on sm_90 GPUs for
    every head_dim but 32, windows and softcap included; the portable mma.sync kernel otherwise),
    "sm80" or "sm90" to force one ("sm90" also covers head_dim 32).
    """
    left, right, cap = window_and_softcap(_OP, window, softcap)
    out, lse = torch.ops.flashkernel.flash_attention(q, k, v, causal, scale, return_lse, backend, left, right, cap)
    return (out, lse) if return_lse else out


def flash_attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                           cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, *,
                           causal: bool = False, scale: float | None = None,
                           window: tuple[int, int] | None = None, softcap: float | None = None,
                           return_lse: bool = False, backend: str = "auto"):
    """Attention over a packed batch of sequences of different lengths (the layout of
    FlashAttention's flash_attn_varlen_func), one launch for the whole batch.

    q: [total_q, Hq, d], k and v: [total_k, Hkv, d] (rows of sequence b at
    cu_seqlens_q[b]:cu_seqlens_q[b + 1] and cu_seqlens_k[b]:cu_seqlens_k[b + 1]); cu_seqlens_*
    int32 [B + 1] on the same device, starting at 0, non-decreasing and ending at most at the
    tensor's rows; max_seqlen_q / max_seqlen_k at least the longest sequence. These values are
    checked (one device-to-host copy of both tensors, which waits for the stream) except while
    torch.compile traces or a CUDA graph is captured; a direct call of the torch op
    torch.ops.flashkernel.flash_attention_varlen trusts them (a bad value then gives a wrong
    result, never an access outside the tensors). causal, scale, window and softcap as in
    flash_attention, per sequence (bottom-right aligned within each). Returns out [total_q, Hq,
    d], or (out, lse) with lse [Hq, total_q] float32 (FlashAttention's varlen layout) when
    return_lse. backend: "auto" (the Hopper kernel on a 9.x GPU, but at head_dim 32; else the
    portable kernel), "sm80", or "sm90" (the Hopper kernel: every head_dim, with or without window
    and softcap).
    """
    check_varlen_arguments(_OP_VARLEN, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    check_varlen_values(_OP_VARLEN, q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    return varlen_with_trusted_offsets(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=causal,
                                       scale=scale, window=window, softcap=softcap, return_lse=return_lse,
                                       backend=backend)


def varlen_with_trusted_offsets(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal=False,
                                scale=None, window=None, softcap=None, return_lse=False, backend="auto"):
    """flash_attention_varlen without the check of the cu_seqlens values (no device-to-host copy),
    for callers that built the offsets from lengths they checked themselves (paged prefill)."""
    left, right, cap = window_and_softcap(_OP_VARLEN, window, softcap)
    out, lse = torch.ops.flashkernel.flash_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                                            max_seqlen_k, causal, scale, return_lse, left, right, cap,
                                                            backend)
    return (out, lse) if return_lse else out


def window_and_softcap(op: str, window, softcap) -> tuple[int, int, float]:
    """(left, right, softcap) as the ops take them: -1 for an unbounded side, 0.0 for no softcap. A
    bound below -1 is an error naming `window` (as in the C++ library)."""
    if window is None:
        left, right = -1, -1
    else:
        if not isinstance(window, (tuple, list)) or len(window) != 2 or \
                not all(isinstance(x, int) and not isinstance(x, bool) for x in window):
            raise ValueError(f"{op}: argument 'window' must be None or a pair of ints (left, right), got {window!r}")
        if any(x < -1 for x in window):
            raise ValueError(f"{op}: argument 'window' must be a pair of ints >= -1 (left, right; -1: unbounded on "
                             f"that side, FlashAttention's convention), got {window!r}")
        left, right = (int(x) for x in window)
    if softcap is None:
        cap = 0.0
    else:
        cap = float(softcap)
        if not math.isfinite(cap) or cap < 0.0:
            raise ValueError(f"{op}: argument 'softcap' must be None or a finite number >= 0, got {softcap!r}")
    return left, right, cap


def check_arguments(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dims: int = 4) -> None:
    """The shape/dtype rules shared by the fake implementations and the Triton twin (the C++ ops
    apply the same ones, with the same messages), naming the argument. dims: 4 for [batch, heads,
    seq, head_dim], 3 for the varlen layout [total, heads, head_dim]."""
    if dims == 4:
        layout_q, layout_kv = "[batch, heads_q, seq_q, head_dim]", "[batch, heads_kv, seq_k, head_dim]"
    else:
        layout_q, layout_kv = "[total_q, heads_q, head_dim]", "[total_k, heads_kv, head_dim]"
    _checks.dim(op, q, dims, "q", layout_q)
    _checks.dim(op, k, dims, "k", layout_kv)
    _checks.dim(op, v, dims, "v", layout_kv)
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: argument 'q' has unsupported dtype {q.dtype}; expected float16 or bfloat16")
    _checks.same_dtype(op, q, k, "q", "k")
    _checks.same_dtype(op, q, v, "q", "v")
    _checks.same_shape(op, k, v, "k", "v")
    head_axis = 1
    if dims == 4 and q.shape[0] != k.shape[0]:
        raise ValueError(f"{op}: argument 'k' must have the batch size of 'q' ({q.shape[0]}), got {k.shape[0]}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"{op}: argument 'k' must have the head_dim of 'q' ({q.shape[-1]}), got {k.shape[-1]}")
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"{op}: argument 'q' must have head_dim 32, 64, 80, 96, 128 or 256, got {q.shape[-1]}")
    if k.shape[head_axis] < 1 or q.shape[head_axis] % k.shape[head_axis] != 0:
        raise ValueError(f"{op}: argument 'q' must have a number of heads ({q.shape[head_axis]}) that is a multiple "
                         f"of the heads of 'k' ({k.shape[head_axis]})")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.shape[-1] > 1 and t.stride(-1) != 1:
            raise ValueError(f"{op}: argument '{name}' must have a contiguous last dimension (stride 1), got "
                             f"strides {t.stride()}")


def check_varlen_arguments(op: str, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> None:
    """check_arguments for the varlen layout plus the cu_seqlens / max_seqlen rules (what can be
    checked without reading device memory)."""
    check_arguments(op, q, k, v, dims=3)
    for name, t in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.dtype != torch.int32:
            raise ValueError(f"{op}: argument '{name}' must be a 1-D int32 tensor [batch + 1]")
        if t.numel() < 1:
            raise ValueError(f"{op}: argument '{name}' must have batch + 1 >= 1 elements, got 0")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(f"{op}: arguments 'cu_seqlens_q' and 'cu_seqlens_k' must have the same length, got "
                         f"{cu_seqlens_q.numel()} and {cu_seqlens_k.numel()}")
    for name, n in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if int(n) < 0:
            raise ValueError(f"{op}: argument '{name}' must be >= 0, got {n}")


def check_varlen_values(op: str, q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k) -> None:
    """The cu_seqlens rules that need their values: each starts at 0, never decreases and ends
    within its tensor's rows, and no sequence is longer than its max_seqlen (both tensors copied
    to the host in one copy; the rules are checked there). Skipped while torch.compile traces or a
    CUDA graph is captured, where no synchronisation is allowed; there, as for a direct call of
    the torch op, the values are trusted: the kernels clamp every offset into the tensors, so a
    bad one gives a wrong result but never an access outside them."""
    if torch.compiler.is_compiling() or (cu_seqlens_q.is_cuda and torch.cuda.is_current_stream_capturing()):
        return
    if cu_seqlens_q.device != q.device or cu_seqlens_k.device != q.device:
        return  # the op names the tensor on the wrong device
    both = torch.cat([cu_seqlens_q, cu_seqlens_k]).cpu()
    n = cu_seqlens_q.numel()
    for name, cu, rows, what, longest in (("cu_seqlens_q", both[:n], q.shape[0], "q", max_seqlen_q),
                                          ("cu_seqlens_k", both[n:], k.shape[0], "k", max_seqlen_k)):
        steps = cu[1:] - cu[:-1]
        if int(cu[0]) != 0 or (steps.numel() > 0 and int(steps.min()) < 0):
            raise ValueError(f"{op}: argument '{name}' must start at 0 and never decrease, got {_shown(cu)}")
        if int(cu[-1]) > rows:
            raise ValueError(f"{op}: argument '{name}' must end at most at {what}'s {rows} rows, got {int(cu[-1])}")
        longest_seen = int(steps.max()) if steps.numel() > 0 else 0
        if longest_seen > int(longest):
            raise ValueError(f"{op}: argument 'max_seqlen_{what}' must be at least the longest sequence, "
                             f"{longest_seen}, got {int(longest)}")


def _shown(t: torch.Tensor, limit: int = 12) -> str:
    values = t[:limit].tolist()
    return str(values) if t.numel() <= limit else str(values)[:-1] + ", ...]"


@_library.register_fake("flashkernel::flash_attention")
def _flash_attention_fake(q, k, v, causal=False, scale=None, return_lse=False, backend="auto", window_left=-1,
                          window_right=-1, softcap=0.0):
    check_arguments(_OP, q, k, v)
    _checks.one_of(_OP, backend, BACKENDS, "backend")
    if not math.isfinite(softcap) or softcap < 0.0:
        raise ValueError(f"{_OP}: argument 'softcap' must be a finite number >= 0, got {softcap}")
    out = q.new_empty(q.shape)
    lse = q.new_empty((q.shape[0], q.shape[1], q.shape[2]) if return_lse else (0,), dtype=torch.float32)
    return out, lse


@_library.register_fake("flashkernel::flash_attention_varlen")
def _flash_attention_varlen_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False,
                                 scale=None, return_lse=False, window_left=-1, window_right=-1, softcap=0.0,
                                 backend="auto"):
    check_varlen_arguments(_OP_VARLEN, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    _checks.one_of(_OP_VARLEN, backend, BACKENDS, "backend")
    if not math.isfinite(softcap) or softcap < 0.0:
        raise ValueError(f"{_OP_VARLEN}: argument 'softcap' must be a finite number >= 0, got {softcap}")
    out = q.new_empty(q.shape)
    lse = q.new_empty((q.shape[1], q.shape[0]) if return_lse else (0,), dtype=torch.float32)
    return out, lse
