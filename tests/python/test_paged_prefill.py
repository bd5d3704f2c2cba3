"""paged_prefill_attention (CUDA op, GPU) and its Triton twin (GPU, and the CPU under
TRITON_INTERPRET=1): new query tokens of several sequences attend causally to what the paged cache
holds for them (earlier turns plus themselves), checked against the float64 reference of the same
attention on contiguous K/V, with prefixes of every length relative to the page size."""
from __future__ import annotations

import pytest
import torch

import flashkernel
import flashkernel.triton
from attention_reference import reference_attention_varlen
from helpers import assert_within_torch_error, gpu, triton_device, triton_twin

# (prefix, new) per sequence: empty prefixes, prefixes one short of / at / one past a page (16),
# several pages, a sequence with no new tokens.
CASES = [(0, 5), (15, 1), (16, 7), (17, 16), (40, 33), (3, 0)]


def run_case(fn, device, dtype=torch.float16, hq=4, hkv=2, d=64, cases=CASES, page_size=16, op_args=None,
             **kwargs):
    gen = torch.Generator().manual_seed(0)
    pages = sum(-(-(p + n) // page_size) for p, n in cases) + 8
    cache = flashkernel.PagedKVCache(num_layers=2, num_pages=pages, num_kv_heads=hkv, head_dim=d,
                                     page_size=page_size, dtype=dtype, device=device)
    ids = [cache.add_sequence() for _ in cases]
    ks, vs = [], []
    for sid, (prefix, new) in zip(ids, cases):
        n = prefix + new
        k = torch.randn(n, hkv, d, generator=gen).to(dtype)
        v = torch.randn(n, hkv, d, generator=gen).to(dtype)
        ks.append(k)
        vs.append(v)
        if prefix:  # the earlier turn, then the new tokens: two appends, as a conversation does
            cache.append(1, [sid], k[:prefix].to(device), v[:prefix].to(device), [prefix])
        if new:
            cache.append(1, [sid], k[prefix:].to(device), v[prefix:].to(device), [new])
    q_lens = [new for _, new in cases]
    q = torch.randn(sum(q_lens), hq, d, generator=gen).to(dtype)
    out = fn(q.to(device), cache, 1, ids, q_lens, **kwargs, **(op_args or {}))
    cu_q = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    cu_k = torch.tensor([0] + torch.tensor([p + n for p, n in cases]).cumsum(0).tolist(), dtype=torch.int32)
    k_all, v_all = torch.cat(ks), torch.cat(vs)
    ref, _ = reference_attention_varlen(q, k_all, v_all, cu_q, cu_k, causal=True, **kwargs)
    lowp, _ = reference_attention_varlen(q, k_all, v_all, cu_q, cu_k, causal=True, dtype=dtype, **kwargs)
    assert out.shape == q.shape and out.dtype == dtype
    assert_within_torch_error(out.cpu(), ref, lowp, what=f"paged prefill {kwargs}")


@triton_twin
@pytest.mark.parametrize("kwargs", [{}, {"window": (8, 0)}, {"softcap": 5.0}])
def test_triton_paged_prefill_matches_reference(kwargs):
    run_case(flashkernel.triton.paged_prefill_attention, triton_device(), **kwargs)


def _hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


@gpu
@pytest.mark.parametrize("kv_read", ["auto", "gather", "pages"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kwargs", [{}, {"window": (8, 0)}, {"softcap": 5.0}])
def test_paged_prefill_matches_reference(dtype, kwargs, kv_read):
    if kv_read == "pages" and not _hopper():
        pytest.skip("the paged kernel needs a compute capability 9.x GPU")
    op_args = {"kv_read": kv_read}
    run_case(flashkernel.paged_prefill_attention, "cuda", dtype=dtype, op_args=op_args, **kwargs)
    run_case(flashkernel.paged_prefill_attention, "cuda", dtype=dtype, hq=8, hkv=1, d=128, op_args=op_args, **kwargs)


# Prefixes of every length relative to the page (one short of, at, one past; several pages; more
# keys than one 128-key tile and a tile straddling pages), at every page size the cache takes:
# the paged kernel copies min(page_size, 128) rows at a time.
@gpu
@pytest.mark.parametrize("kv_read", ["gather", "pages"])
@pytest.mark.parametrize("page_size", [8, 16, 64, 128, 256])
def test_paged_prefill_page_sizes(page_size, kv_read):
    if kv_read == "pages" and not _hopper():
        pytest.skip("the paged kernel needs a compute capability 9.x GPU")
    p = page_size
    cases = [(p - 1, 1), (p, 3), (p + 1, 129), (3 * p + 5, 200), (0, 300), (700, 64), (1000, 1)]
    for d, kwargs in [(64, {}), (128, {"window": (150, 0), "softcap": 20.0})]:
        run_case(flashkernel.paged_prefill_attention, "cuda", dtype=torch.bfloat16, hq=8, hkv=2, d=d, cases=cases,
                 page_size=page_size, op_args={"kv_read": kv_read}, **kwargs)


@gpu
def test_paged_prefill_kv_read_values():
    cache = flashkernel.PagedKVCache(num_layers=1, num_pages=4, num_kv_heads=2, head_dim=64, device="cuda")
    sid = cache.add_sequence()
    kv = torch.zeros(3, 2, 64, dtype=torch.float16, device="cuda")
    cache.append(0, [sid], kv, kv, [3])
    q = torch.zeros(3, 2, 64, dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="'kv_read'"):
        flashkernel.paged_prefill_attention(q, cache, 0, [sid], [3], kv_read="copy")
    if not _hopper():
        with pytest.raises(ValueError, match="'kv_read'"):
            flashkernel.paged_prefill_attention(q, cache, 0, [sid], [3], kv_read="pages")


def test_paged_prefill_argument_errors():
    cache = flashkernel.PagedKVCache(num_layers=1, num_pages=4, num_kv_heads=2, head_dim=64, device="cpu")
    sid = cache.add_sequence()
    cache.append(0, [sid], torch.zeros(3, 2, 64, dtype=torch.float16), torch.zeros(3, 2, 64, dtype=torch.float16),
                 [3])
    q = torch.zeros(4, 2, 64, dtype=torch.float16)
    fn = flashkernel.paged_prefill_attention
    with pytest.raises(ValueError, match="fewer than its 4 new query tokens"):
        fn(q, cache, 0, [sid], [4])
    with pytest.raises(ValueError, match="'q_lens'"):
        fn(q, cache, 0, [sid], [2, 2])
    with pytest.raises(ValueError, match="'q'"):
        fn(q, cache, 0, [sid], [3])
    with pytest.raises(ValueError, match="'q'"):
        fn(torch.zeros(3, 3, 64, dtype=torch.float16), cache, 0, [sid], [3])
    with pytest.raises(ValueError, match="'layer'"):
        fn(q[:3], cache, 1, [sid], [3])
    with pytest.raises(TypeError, match="'cache'"):
        fn(q[:3], object(), 0, [sid], [3])
