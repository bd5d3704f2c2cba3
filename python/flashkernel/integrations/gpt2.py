"""patch_gpt2(model): HF's GPT2LMHeadModel keeps its own forward and `generate`, but every block's
attention runs FlashKernel's flash_attention (over HF's own KV cache) and every MLP's c_fc + GeLU
runs FlashKernel's fused gelu_linear.

Attention goes through transformers' AttentionInterface under the name "fk_attention" (with SDPA's
mask rule, which hands the attention no mask when plain causal masking is exact); a call that does
carry a mask (left-padded batches) falls back to torch SDPA with that mask.
"""
from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from flashkernel.ops.attention import SUPPORTED_HEAD_DIMS, flash_attention
from flashkernel.ops.gelu_linear import gelu_linear

_OP = "flashkernel.integrations.patch_gpt2"
# transformers treats implementation names containing "flash" as flash-attn hub kernels.
_ATTN_NAME = "fk_attention"
_registered = False


def _flashkernel_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention-interface signature: q/k/v [B, H, S, D]; returns ([B, S, H, D], None)."""
    if scaling is None:
        # transformers versions that pass no scaling keep GPT-2's scale options on the module
        # (scale_attn_weights=False, scale_attn_by_inverse_layer_idx=True change the scores).
        scaling = query.shape[-1] ** -0.5 if getattr(module, "scale_attn_weights", True) else 1.0
        if getattr(module, "scale_attn_by_inverse_layer_idx", False):
            scaling /= float(module.layer_idx + 1)
    # Cross-attention (add_cross_attention=True) sees the whole encoder output: never causal.
    is_causal = kwargs.get("is_causal")
    causal = query.shape[2] > 1 and (getattr(module, "is_causal", True) if is_causal is None else is_causal)
    usable = (attention_mask is None and query.dtype in (torch.float16, torch.bfloat16)
              and query.shape[-1] in SUPPORTED_HEAD_DIMS and query.is_cuda)
    if usable:
        # Bottom-right causal alignment covers both prefill (Sq == Sk) and cached decode (Sq < Sk).
        out = flash_attention(query, key, value, causal=causal, scale=scaling)
    else:
        mask = attention_mask
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.to(query.dtype)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                             is_causal=mask is None and causal)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    AttentionInterface.register(_ATTN_NAME, _flashkernel_attention)
    try:  # SDPA's mask builder returns None when causal masking alone is exact
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
        ALL_MASK_ATTENTION_FUNCTIONS.register(_ATTN_NAME, sdpa_mask)
    except ImportError:  # older transformers: the attention gets a mask and falls back to SDPA
        pass
    _registered = True


def _mlp_forward(self, hidden_states):
    w_t = self._fk_fc_weight_t
    if hidden_states.dtype != w_t.dtype or not hidden_states.is_cuda:
        return self._fk_orig_forward(hidden_states)
    shape = hidden_states.shape
    h = gelu_linear(hidden_states.reshape(-1, shape[-1]).contiguous(), w_t, self.c_fc.bias, approximate="tanh")
    h = self.c_proj(h.view(*shape[:-1], -1))
    return self.dropout(h)


def patch_gpt2(model):
    """Switches a transformers GPT-2 model (GPT2LMHeadModel or GPT2Model, float16/bfloat16 on a
    CUDA device) to FlashKernel's attention and fused MLP, in place; returns the model. HF's own
    `generate` then runs on them. Reverse with unpatch_gpt2."""
    cfg = model.config
    if getattr(cfg, "model_type", None) != "gpt2":
        raise ValueError(f"{_OP}: argument 'model' must be a GPT-2 model, got model_type "
                         f"{getattr(cfg, 'model_type', None)!r}")
    p = next(model.parameters())
    if not p.is_cuda or p.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"{_OP}: argument 'model' must be float16 or bfloat16 on a CUDA device, got {p.dtype} "
                         f"on {p.device}")
    if cfg.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{_OP}: argument 'model' uses activation {cfg.activation_function!r}; the fused MLP "
                         "implements GPT-2's tanh GeLU")
    _register()
    if getattr(model, "_fk_orig_attn", None) is None:
        model._fk_orig_attn = cfg._attn_implementation
    try:
        model.set_attn_implementation(_ATTN_NAME)
    except (AttributeError, ValueError):  # versions that validate names against their own list
        cfg._attn_implementation = _ATTN_NAME
    body = model.transformer if hasattr(model, "transformer") else model
    for block in body.h:
        mlp = block.mlp
        # Conv1D stores [in, out]; gelu_linear wants nn.Linear's [out, in], made once here.
        mlp._fk_fc_weight_t = mlp.c_fc.weight.detach().t().contiguous()
        if not hasattr(mlp, "_fk_orig_forward"):
            mlp._fk_orig_forward = mlp.forward
        mlp.forward = types.MethodType(_mlp_forward, mlp)
    return model


def unpatch_gpt2(model):
    """Undoes patch_gpt2 (restores HF's attention implementation and MLP forwards)."""
    body = model.transformer if hasattr(model, "transformer") else model
    for block in body.h:
        mlp = block.mlp
        if hasattr(mlp, "_fk_orig_forward"):
            mlp.forward = mlp._fk_orig_forward
            del mlp._fk_orig_forward, mlp._fk_fc_weight_t
    orig = getattr(model, "_fk_orig_attn", None)
    if orig is not None:
        try:
            model.set_attn_implementation(orig)
        except (AttributeError, ValueError):
            model.config._attn_implementation = orig
        model._fk_orig_attn = None
    return model
