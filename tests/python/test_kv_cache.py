"""Paged KV cache through Python: PagedKVCache bookkeeping (CPU, always runs), append + gather
bit-identical to a contiguous concat, copy-on-write after fork, paged decode attention against an
fp64 reference and SDPA over the same K/V, argument errors, the Triton gather twin, and the FP8
(float8_e4m3fn) cache: quantize/dequantize against a torch reference, decode against SDPA over
the dequantized cache, and its error against the fp16 cache, measured and bounded."""
import math

import pytest
import torch
import torch.nn.functional as F

import flashkernel
import flashkernel.triton
from flashkernel import OutOfPagesError, PagedKVCache
from helpers import (assert_within_torch_error, fresh_generator, gpu, interpreter_rounding_slack,
                     randn, triton_device, triton_twin)

DTYPES = [torch.float16, torch.bfloat16]


def make_cache(device, *, layers=2, pages=64, heads=2, d=64, page_size=16, dtype=torch.float16, kv_dtype=None):
    return PagedKVCache(layers, pages, heads, d, page_size=page_size, dtype=dtype, kv_dtype=kv_dtype, device=device)


def poison(cache):
    """NaN in every pool element, so a read outside the written tokens shows up (0x7f is e4m3's NaN;
    the byte view needs no float8 fill kernel)."""
    if cache.pool.dtype == torch.float8_e4m3fn:
        cache.pool.view(torch.uint8).fill_(0x7F)
    else:
        cache.pool.fill_(float("nan"))


def fill(cache, layer, seq_lens, chunk_sizes, device):
    """Appends the given lengths in interleaved chunks (a batch per round, variable counts); returns
    per-sequence (K, V) as written, each [tokens, heads, d]."""
    ids = [cache.add_sequence() for _ in seq_lens]
    written = {s: ([], []) for s in ids}
    done = [0] * len(ids)
    rnd = 0
    while any(d < n for d, n in zip(done, seq_lens)):
        counts = [min(chunk_sizes[(rnd + i) % len(chunk_sizes)], n - d) for i, (d, n) in enumerate(zip(done, seq_lens))]
        total = sum(counts)
        k = randn((total, cache.num_kv_heads, cache.head_dim), cache.dtype, device)
        v = randn((total, cache.num_kv_heads, cache.head_dim), cache.dtype, device)
        cache.append(layer, ids, k, v, counts)
        o = 0
        for i, s in enumerate(ids):
            written[s][0].append(k[o:o + counts[i]])
            written[s][1].append(v[o:o + counts[i]])
            o += counts[i]
            done[i] += counts[i]
        rnd += 1
    return ids, {s: (torch.cat(kk), torch.cat(vv)) for s, (kk, vv) in written.items()}


def check_gather_bit_identical(cache, layer, ids, written, gather):
    for s in ids:
        k, v = gather(cache, layer, s)
        want_k, want_v = written[s]
        assert torch.equal(k, want_k.transpose(0, 1)), f"sequence {s}: K differs from the concat"
        assert torch.equal(v, want_v.transpose(0, 1)), f"sequence {s}: V differs from the concat"


# ---------------------------------------------------------------- bookkeeping (CPU cache, no GPU)
def test_cpu_cache_append_gather_fork_and_stats():
    cache = make_cache("cpu", page_size=8, pages=32)
    ids, written = fill(cache, 0, [1, 7, 8, 9, 30], [3, 1, 8], "cpu")
    check_gather_bit_identical(cache, 0, ids, written, flashkernel.kv_cache_gather)
    st = cache.memory_stats()
    assert st["tokens_stored"] == 1 + 7 + 8 + 9 + 30
    assert st["pages_used"] == sum(math.ceil(n / 8) for n in [1, 7, 8, 9, 30])
    assert st["fragmentation_tokens"] < 8 * len(ids)  # under one page per sequence
    assert st["pages_used"] + st["pages_free"] == st["pages_total"]
    cache.check_invariants()


def test_cpu_cache_fork_copy_on_write():
    cache = make_cache("cpu", page_size=8, pages=16, layers=2)
    ids, written = fill(cache, 0, [13], [13], "cpu")
    s = ids[0]
    used_before = cache.memory_stats()["pages_used"]
    f = cache.fork(s)
    assert cache.memory_stats()["pages_used"] == used_before  # prefix shared, not copied
    assert cache.memory_stats()["tokens_stored"] == 13
    ka, va = randn((2, 2, 64), torch.float16, "cpu"), randn((2, 2, 64), torch.float16, "cpu")
    kb, vb = randn((3, 2, 64), torch.float16, "cpu"), randn((3, 2, 64), torch.float16, "cpu")
    cache.append(0, [s], ka, va, [2])
    cache.append(0, [f], kb, vb, [3])
    k_s, v_s = cache.gather(0, s)
    k_f, v_f = cache.gather(0, f)
    assert torch.equal(k_s, torch.cat([written[s][0], ka]).transpose(0, 1))
    assert torch.equal(v_f, torch.cat([written[s][1], vb]).transpose(0, 1))
    assert torch.equal(k_f, torch.cat([written[s][0], kb]).transpose(0, 1))
    assert cache.pages(s)[0] == cache.pages(f)[0]  # the full first page stays shared
    assert cache.pages(s)[1] != cache.pages(f)[1]  # the partial one was copied on write
    cache.check_invariants()


def test_out_of_pages_changes_nothing_and_bad_ids_raise():
    cache = make_cache("cpu", page_size=8, pages=4)
    a, b = cache.add_sequence(), cache.add_sequence()
    cache.append(0, [a], randn((20, 2, 64), torch.float16, "cpu"), randn((20, 2, 64), torch.float16, "cpu"), [20])
    before = (cache.pages(a), cache.pages(b), sorted(cache.free_pages()), cache.seq_len(a), cache.seq_len(b))
    k = randn((9 + 8, 2, 64), torch.float16, "cpu")
    with pytest.raises(OutOfPagesError, match="out of pages"):
        cache.append(0, [b, a], k, k, [9, 8])
    with pytest.raises(OutOfPagesError, match="out of pages"):
        cache.reserve(b, 100)
    assert (cache.pages(a), cache.pages(b), sorted(cache.free_pages()), cache.seq_len(a), cache.seq_len(b)) == before
    cache.free_sequence(b)
    with pytest.raises(ValueError, match="argument 'seq_id'.*not a live sequence"):
        cache.free_sequence(b)
    with pytest.raises(ValueError, match="argument 'seq_ids'.*not a live sequence"):
        cache.append(0, [b], k[:1], k[:1])
    with pytest.raises(ValueError, match="argument 'seq_id'.*not a live sequence"):
        cache.gather(0, b)
    with pytest.raises(ValueError, match="argument 'k' must have shape"):
        cache.append(0, [a], k[:2], k[:1])
    with pytest.raises(TypeError, match="argument 'v' must have the cache's dtype"):
        cache.append(0, [a], k[:1], k[:1].float())
    with pytest.raises(ValueError, match="argument 'layer'"):
        cache.append(5, [a], k[:1], k[:1])
    with pytest.raises(ValueError, match="argument 'page_size'"):
        make_cache("cpu", page_size=12)
    with pytest.raises(ValueError, match="argument 'head_dim'"):
        make_cache("cpu", d=96)
    with pytest.raises(TypeError, match="argument 'dtype'"):
        make_cache("cpu", dtype=torch.float32)
    cache.check_invariants()


# ---------------------------------------------------------------- CUDA append / gather
@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("page_size", [8, 16, 256])
def test_append_then_gather_is_bit_identical(dtype, d, page_size):
    cache = make_cache("cuda", layers=3, pages=80, heads=3, d=d, page_size=page_size, dtype=dtype)
    poison(cache)
    # Prefill chunks then decode steps, variable counts per sequence, on a middle layer.
    ids, written = fill(cache, 1, [1, 7, 127, 300, 16], [33, 1, 1, 5, 1], "cuda")
    check_gather_bit_identical(cache, 1, ids, written, flashkernel.kv_cache_gather)
    cache.check_invariants()


@gpu
def test_append_from_misaligned_views():
    cache = make_cache("cuda", d=64, heads=1)
    s = cache.add_sequence()
    big = randn((5 * 64 + 1,), torch.float16)
    k = big[1:].view(5, 1, 64)  # 2 bytes off 16-byte alignment: takes the scalar path
    cache.append(0, [s], k, k, [5])
    kk, vv = cache.gather(0, s)
    assert torch.equal(kk, k.transpose(0, 1)) and torch.equal(vv, k.transpose(0, 1))


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_fork_divergent_appends_cuda(dtype):
    cache = make_cache("cuda", layers=2, pages=32, heads=2, d=128, page_size=16, dtype=dtype)
    ids, written = fill(cache, 0, [37], [37], "cuda")
    s = ids[0]
    k1, v1 = randn((37, 2, 128), dtype), randn((37, 2, 128), dtype)
    cache.append(1, [s], k1, v1, [37])
    pages_before = cache.memory_stats()["pages_used"]
    f = cache.fork(s)
    assert cache.memory_stats()["pages_used"] == pages_before
    assert cache.memory_stats()["tokens_stored"] == 37
    extra = {}
    for seq, n in ((f, 5), (s, 12)):
        for layer in (0, 1):
            k, v = randn((n, 2, 128), dtype), randn((n, 2, 128), dtype)
            cache.append(layer, [seq], k, v, [n])
            extra[(seq, layer)] = (k, v)
    base = {0: written[s], 1: (k1, v1)}
    for seq in (s, f):
        for layer in (0, 1):
            k, v = cache.gather(layer, seq)
            assert torch.equal(k, torch.cat([base[layer][0], extra[(seq, layer)][0]]).transpose(0, 1))
            assert torch.equal(v, torch.cat([base[layer][1], extra[(seq, layer)][1]]).transpose(0, 1))
    assert cache.pages(s)[:2] == cache.pages(f)[:2]  # full pages still shared: stored once
    cache.check_invariants()


@gpu
def test_gather_op_opcheck():
    cache = make_cache("cuda", d=64)
    ids, _ = fill(cache, 0, [21], [21], "cuda")
    pages = torch.tensor(cache.pages(ids[0]), dtype=torch.int32, device="cuda")
    torch.library.opcheck(torch.ops.flashkernel.kv_cache_gather.default, (cache.pool, 0, pages, 21))


# ---------------------------------------------------------------- decode attention
def reference_decode(q, kvs, scale):
    """fp64 softmax(scale q K^T) V per sequence; kvs[b] = (K, V) [tokens, Hkv, d] as written."""
    outs = []
    for b, (k, v) in enumerate(kvs):
        group = q.shape[1] // k.shape[1]
        kk = k.double().transpose(0, 1).repeat_interleave(group, 0)  # [Hq, L, d]
        vv = v.double().transpose(0, 1).repeat_interleave(group, 0)
        s = torch.einsum("hd,hld->hl", q[b].double(), kk) * scale
        outs.append(torch.einsum("hl,hld->hd", torch.softmax(s, -1), vv))
    return torch.stack(outs)


def sdpa_lowp(q, kvs, scale):
    """PyTorch's own low-precision answer (SDPA in the input dtype) over the same K/V."""
    outs = []
    for b, (k, v) in enumerate(kvs):
        group = q.shape[1] // k.shape[1]
        kk = k.transpose(0, 1).repeat_interleave(group, 0).unsqueeze(0)
        vv = v.transpose(0, 1).repeat_interleave(group, 0).unsqueeze(0)
        outs.append(F.scaled_dot_product_attention(q[b][None, :, None], kk, vv, scale=scale)[0, :, 0])
    return torch.stack(outs)


def check_decode(lens, *, hq, hkv, d, dtype, page_size=16, layers=2, layer=1, scale=None, kv_dtype=None,
                 device="cuda", decode=flashkernel.paged_decode_attention):
    """decode (the CUDA op or its Triton twin) on a poisoned cache filled in interleaved chunks,
    against the float64 reference under the 2x-PyTorch-error rule."""
    pages = sum(math.ceil(n / page_size) for n in lens) + 4
    cache = make_cache(device, layers=layers, pages=pages, heads=hkv, d=d, page_size=page_size, dtype=dtype,
                       kv_dtype=kv_dtype)
    poison(cache)  # a read outside the sequences' tokens shows up as NaN
    if cache.quantized:  # per-head scales around amax / 448 of unit normals, different per head and K/V
        cache.set_scales(layer, fp8_test_scales(hkv, 0), fp8_test_scales(hkv, 1))
    chunks = [max(1, max(lens) // 3), 1, 17]
    ids, written = fill(cache, layer, lens, chunks, device)
    q = randn((len(lens), hq, d), dtype, device)
    sc = scale if scale is not None else 1 / math.sqrt(d)
    out = decode(q, cache, layer, ids, scale=scale)
    kvs = [written[s] for s in ids]
    if cache.quantized:
        # The kernel attends over the stored values: scale * e4m3 exactly (fp64 here), and torch's
        # low-precision comparison gets the same values rounded to dtype.
        kvs = [fp8_reference(cache, layer, k, v, torch.float64) for k, v in kvs]
    assert out.shape == q.shape and out.dtype == dtype
    assert_within_torch_error(out, reference_decode(q, kvs, sc), sdpa_lowp(q, [(k.to(dtype), v.to(dtype))
                                                                               for k, v in kvs], sc),
                              factor=2.0, floor=2e-3 if dtype == torch.bfloat16 else 3e-4,
                              what=f"lens={lens} hq={hq} hkv={hkv} d={d} {dtype} kv={kv_dtype} page={page_size}")
    return cache, ids, q, out


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("heads", [(32, 8), (4, 4)])
@pytest.mark.parametrize("ctx", [1, 15, 16, 17, 4095])
def test_decode_matches_reference(ctx, heads, d, dtype):
    check_decode([ctx], hq=heads[0], hkv=heads[1], d=d, dtype=dtype)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [(32, 8), (8, 8)])
def test_decode_long_context_32768(heads, dtype):
    check_decode([32768], hq=heads[0], hkv=heads[1], d=128, dtype=dtype, layers=1, layer=0)


@gpu
@pytest.mark.parametrize("page_size", [8, 256])
@pytest.mark.parametrize("heads", [(32, 8), (6, 2), (24, 2), (12, 1)])
def test_decode_mixed_length_batch(heads, page_size):
    # Group sizes 4, 3 (padded to 4), 12 (two chunks of 8) and 12 with one KV head.
    check_decode([1, 15, 16, 17, 300, 4095, 2, 1000], hq=heads[0], hkv=heads[1], d=128, dtype=torch.bfloat16,
                 page_size=page_size)


@gpu
def test_decode_custom_scale_and_large_batch():
    g, _ = fresh_generator()
    lens = torch.randint(1, 700, (64,), generator=g).tolist()
    check_decode(lens, hq=16, hkv=4, d=64, dtype=torch.float16, scale=0.3)


@gpu
def test_decode_opcheck_and_compile():
    cache = make_cache("cuda", d=64, heads=2)
    ids, _ = fill(cache, 0, [40, 3], [40], "cuda")
    table, lens = cache.page_table(ids, 0)
    q = randn((2, 4, 64), torch.float16)
    args = (q, cache.pool, 0, table, lens, 40, None)
    torch.library.opcheck(torch.ops.flashkernel.paged_decode_attention.default, args)
    f = torch.compile(lambda q: torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, table, lens, 40) * 2,
                      fullgraph=True)
    torch.testing.assert_close(f(q), torch.ops.flashkernel.paged_decode_attention(*args) * 2)


@gpu
def test_decode_bad_inputs_name_the_argument():
    cache = make_cache("cuda", d=64, heads=2)
    ids, _ = fill(cache, 0, [5], [5], "cuda")
    empty = cache.add_sequence()
    q = randn((1, 4, 64), torch.float16)
    with pytest.raises(ValueError, match="argument 'q' must have one row per sequence"):
        flashkernel.paged_decode_attention(randn((2, 4, 64), torch.float16), cache, 0, ids)
    with pytest.raises(ValueError, match="argument 'q' must be a 3-D"):
        flashkernel.paged_decode_attention(q[0], cache, 0, ids)
    with pytest.raises(TypeError, match="same dtype"):
        flashkernel.paged_decode_attention(q.bfloat16(), cache, 0, ids)
    with pytest.raises(ValueError, match="argument 'q' must be a CUDA tensor"):
        flashkernel.paged_decode_attention(q.cpu(), cache, 0, ids)
    with pytest.raises(ValueError, match="argument 'num_q_heads'"):
        flashkernel.paged_decode_attention(randn((1, 3, 64), torch.float16), cache, 0, ids)
    with pytest.raises(ValueError, match="head_dim"):
        flashkernel.paged_decode_attention(randn((1, 4, 128), torch.float16), cache, 0, ids)
    with pytest.raises(ValueError, match="argument 'seq_ids'.*no tokens"):
        flashkernel.paged_decode_attention(q, cache, 0, [empty])
    with pytest.raises(ValueError, match="argument 'seq_ids'.*not a live sequence"):
        flashkernel.paged_decode_attention(q, cache, 0, [999])
    with pytest.raises(ValueError, match="argument 'layer'"):
        flashkernel.paged_decode_attention(q, cache, 7, ids)
    with pytest.raises(ValueError, match="argument 'scale'"):
        flashkernel.paged_decode_attention(q, cache, 0, ids, scale=-1.0)
    with pytest.raises(TypeError, match="argument 'cache'"):
        flashkernel.paged_decode_attention(q, cache.pool, 0, ids)
    table, lens = cache.page_table(ids, 0)
    with pytest.raises(TypeError, match="argument 'page_table' must be Int"):
        torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, table.long(), lens, 5)
    with pytest.raises(ValueError, match="argument 'max_seq_len'"):
        torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, table, lens, 10**6)
    with pytest.raises(ValueError, match="argument 'pool' must be 6-D"):
        torch.ops.flashkernel.paged_decode_attention(q, cache.pool[0], 0, table, lens, 5)


# ---------------------------------------------------------------- FP8 (float8_e4m3fn) cache
FP8 = torch.float8_e4m3fn


def fp8_test_scales(heads, which):
    """Distinct per-head scales near amax / 448 of unit normals (~4.5 / 448), so a few values
    saturate and a scale applied to the wrong head or to K instead of V shows."""
    return [0.008 + 0.002 * ((h + 2 * which) % 5) for h in range(heads)]


def fp8_reference(cache, layer, k, v, dtype):
    """What an FP8 cache stores for k, v [tokens, Hkv, d], read back in `dtype`: e4m3(x / scale)
    computed in fp32, rounded to nearest even, saturated to +-448 (torch's own cast makes NaN of
    out-of-range values, hence the clamp), times the scale, rounded once to dtype. Independent of
    the library's kernels and of its CPU path."""
    out = []
    for x, s in ((k, cache.k_scale[layer]), (v, cache.v_scale[layer])):
        s = s.to(x.device)[:, None]
        e4m3 = (x.float() / s).clamp(-448.0, 448.0).to(FP8)
        out.append((e4m3.double() * s.double()).to(dtype) if dtype == torch.float64 else (e4m3.float() * s).to(dtype))
    return out[0], out[1]


def check_fp8_gather(cache, layer, ids, written):
    for s in ids:
        k, v = cache.gather(layer, s)
        want_k, want_v = fp8_reference(cache, layer, *written[s], cache.dtype)
        assert k.dtype == cache.dtype and v.dtype == cache.dtype
        assert torch.equal(k, want_k.transpose(0, 1)), f"sequence {s}: K differs from the quantized reference"
        assert torch.equal(v, want_v.transpose(0, 1)), f"sequence {s}: V differs from the quantized reference"


@pytest.mark.parametrize("dtype", DTYPES)
def test_fp8_cpu_cache_quantizes_saturates_and_forks(dtype):
    cache = make_cache("cpu", layers=2, pages=32, heads=3, page_size=8, dtype=dtype, kv_dtype=FP8)
    assert cache.pool.dtype == FP8 and cache.bytes_per_page == 2 * 2 * 3 * 8 * 64  # one byte per element
    cache.set_scales(1, fp8_test_scales(3, 0), fp8_test_scales(3, 1))
    ids, written = fill(cache, 1, [1, 7, 8, 30], [3, 1, 8], "cpu")
    check_fp8_gather(cache, 1, ids, written)
    # Outliers saturate to +-448 * scale; they never become NaN.
    s = cache.add_sequence()
    big = torch.full((1, 3, 64), 1e4, dtype=dtype)
    big[0, :, 1] = -1e4
    cache.append(1, [s], big, big)
    k, _ = cache.gather(1, s)
    assert torch.equal(k[:, 0, 0].float(), (448 * torch.tensor(fp8_test_scales(3, 0))).to(dtype).float())
    assert torch.equal(k[:, 0, 1], -k[:, 0, 0])
    f = cache.fork(ids[3])
    kf, vf = randn((2, 3, 64), dtype, "cpu"), randn((2, 3, 64), dtype, "cpu")
    cache.append(1, [f], kf, vf, [2])
    written[f] = (torch.cat([written[ids[3]][0], kf]), torch.cat([written[ids[3]][1], vf]))
    check_fp8_gather(cache, 1, ids + [f], written)
    cache.check_invariants()


def test_fp8_calibrate_and_bad_arguments():
    cache = make_cache("cpu", heads=2, kv_dtype=FP8)
    k = randn((40, 2, 64), torch.float16, "cpu")
    k[:, 1] *= 10
    v = torch.zeros((40, 2, 64), dtype=torch.float16)
    cache.calibrate(0, k, v)
    amax = k.float().abs().amax(dim=(0, 2))
    torch.testing.assert_close(cache.k_scale[0], amax / 448, rtol=1e-6, atol=0)
    assert cache.v_scale[0].tolist() == [1.0, 1.0]  # all-zero samples keep scale 1
    assert cache.k_scale[1].tolist() == [1.0, 1.0]  # other layers untouched (default 1.0)
    s = cache.add_sequence()
    cache.append(0, [s], k, k, [40])
    kk, _ = cache.gather(0, s)  # calibrated: the largest sample is stored exactly as 448 * scale
    assert (kk.float() - k.float().transpose(0, 1)).abs().amax().item() <= 0.07 * amax.max().item()
    for kv_dtype in (torch.float32, torch.float8_e5m2, torch.int8, torch.bfloat16):
        with pytest.raises(TypeError, match="argument 'kv_dtype'"):
            make_cache("cpu", kv_dtype=kv_dtype)
    with pytest.raises(ValueError, match="layer 0 holds tokens"):
        cache.set_scales(0, 1.0, 1.0)
    with pytest.raises(ValueError, match="argument 'k_scale' must be finite and > 0"):
        cache.set_scales(1, [1.0, 0.0], 1.0)
    with pytest.raises(ValueError, match="argument 'v_scale' must be finite and > 0"):
        cache.set_scales(1, 1.0, float("nan"))
    with pytest.raises(ValueError, match="argument 'v_scale' must be one value or 2"):
        cache.set_scales(1, 1.0, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="argument 'layer'"):
        cache.set_scales(2, 1.0, 1.0)
    with pytest.raises(ValueError, match="argument 'k' must be a tensor"):
        cache.calibrate(1, k[:, :1], v)
    with pytest.raises(ValueError, match="argument 'margin'"):
        cache.calibrate(1, k, v, margin=0.5)
    with pytest.raises(ValueError, match="scales are for kv_dtype=torch.float8_e4m3fn"):
        make_cache("cpu").set_scales(0, 1.0, 1.0)
    with pytest.raises(TypeError, match="argument 'k' must have the cache's dtype"):
        cache.append(1, [s], k.bfloat16()[:1], k[:1])


def attention_fp64(q, k, v, scale):
    """softmax(scale q K^T) V in fp64 for one sequence: q [Hq, d], k, v [Hkv, L, d]."""
    g = q.shape[0] // k.shape[0]
    kk, vv = k.double().repeat_interleave(g, 0), v.double().repeat_interleave(g, 0)
    return torch.einsum("hl,hld->hd", torch.softmax(torch.einsum("hd,hld->hl", q.double(), kk) * scale, -1), vv)


# The FP8 error bound (docs/ops/kv_cache.md): attention over the e4m3 cache (scales calibrated to
# amax / 448 per head) against attention over the same 16-bit K/V, unit-normal q, K, V. Measured on
# the CPU (fp64 attention, 3 seeds, contexts 16-32768): max error 4-5% of max |out|, mean error 3.5-4%
# of mean |out| (e4m3 keeps 3 mantissa bits: up to 6.25% per element, averaging down over d and
# the context). The bounds leave about 2.5x room.
FP8_MAX_REL_ERROR = 0.12
FP8_MEAN_REL_ERROR = 0.08


def fp8_error(out, ref):
    """(max abs error / max |ref|, mean abs error / mean |ref|)."""
    e = (out.double() - ref.double()).abs()
    return (e.max() / ref.double().abs().max()).item(), (e.mean() / ref.double().abs().mean()).item()


@pytest.mark.parametrize("ctx", [16, 4095])
def test_fp8_attention_error_bound_over_the_cpu_cache(ctx):
    """The quantization error itself, through the CPU cache (no GPU): attention over the gathered,
    dequantized K/V against attention over the K/V as written."""
    hkv, hq, d = 4, 16, 128
    cache = make_cache("cpu", layers=1, pages=ctx // 16 + 2, heads=hkv, d=d, kv_dtype=FP8)
    k, v = randn((ctx, hkv, d), torch.float16, "cpu"), randn((ctx, hkv, d), torch.float16, "cpu")
    cache.calibrate(0, k, v)
    s = cache.add_sequence()
    cache.append(0, [s], k, v, [ctx])
    kq, vq = cache.gather(0, s)
    q = randn((hq, d), torch.float16, "cpu")
    ref = attention_fp64(q, k.transpose(0, 1), v.transpose(0, 1), d ** -0.5)
    err_max, err_mean = fp8_error(attention_fp64(q, kq, vq, d ** -0.5), ref)
    assert 1e-4 < err_mean <= FP8_MEAN_REL_ERROR and err_max <= FP8_MAX_REL_ERROR, (err_max, err_mean)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("page_size", [8, 16, 256])
def test_fp8_append_then_gather_matches_the_quantized_reference(dtype, d, page_size):
    cache = make_cache("cuda", layers=3, pages=80, heads=3, d=d, page_size=page_size, dtype=dtype, kv_dtype=FP8)
    poison(cache)
    cache.set_scales(1, fp8_test_scales(3, 0), fp8_test_scales(3, 1))
    ids, written = fill(cache, 1, [1, 7, 127, 300, 16], [33, 1, 1, 5, 1], "cuda")
    check_fp8_gather(cache, 1, ids, written)
    # The stored bytes themselves: the kernel's e4m3 values equal torch's (saturated) cast.
    s = ids[2]
    slot_pages = cache.pages(s)
    want = (written[s][0][:page_size].float() / cache.k_scale[1][:, None]).clamp(-448, 448).to(FP8)
    n = min(page_size, 127)
    got = cache.pool[1, slot_pages[0], 0, :, :n].transpose(0, 1)
    assert torch.equal(got.view(torch.uint8), want[:n].view(torch.uint8))
    # Copy-on-write copies FP8 pages byte for byte.
    f = cache.fork(ids[3])
    kf, vf = randn((3, 3, d), dtype), randn((3, 3, d), dtype)
    cache.append(1, [f], kf, vf, [3])
    written[f] = (torch.cat([written[ids[3]][0], kf]), torch.cat([written[ids[3]][1], vf]))
    check_fp8_gather(cache, 1, ids + [f], written)
    cache.check_invariants()


@gpu
def test_fp8_append_from_misaligned_views():
    cache = make_cache("cuda", d=64, heads=1, kv_dtype=FP8)
    cache.set_scales(0, 0.01, 0.02)
    s = cache.add_sequence()
    big = randn((5 * 64 + 1,), torch.float16)
    k = big[1:].view(5, 1, 64)  # 2 bytes off 16-byte alignment: takes the one-element path
    cache.append(0, [s], k, k, [5])
    check_fp8_gather(cache, 0, [s], {s: (k, k)})


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("group", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("ctx", [1, 15, 16, 17, 4095])
def test_fp8_decode_matches_reference_over_the_dequantized_cache(ctx, group, d, dtype):
    check_decode([ctx], hq=2 * group, hkv=2, d=d, dtype=dtype, kv_dtype=FP8)


@gpu
@pytest.mark.parametrize("heads", [(32, 8), (32, 1), (24, 2), (12, 4)])
def test_fp8_decode_mixed_lengths_and_other_group_sizes(heads):
    # Group sizes 4, 32 (two chunks of 16), 12 and 3 (padded to 16 / 4).
    check_decode([1, 15, 16, 17, 300, 4095, 2, 1000], hq=heads[0], hkv=heads[1], d=128, dtype=torch.bfloat16,
                 page_size=8, kv_dtype=FP8)


@gpu
def test_fp8_decode_long_context_32768():
    check_decode([32768], hq=32, hkv=8, d=128, dtype=torch.float16, layers=1, layer=0, kv_dtype=FP8)


@gpu
@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("ctx", [16, 4095])
def test_fp8_decode_error_against_the_fp16_cache(ctx, group):
    """Same K/V and q through an fp16 cache and an FP8 cache (calibrated scales): the FP8 output's
    error against the fp16 one is bounded (and is not zero: the test would catch an FP8 cache that
    silently stores 16 bits). The numbers are printed for docs/ops/kv_cache.md (pytest -s)."""
    hkv, d, batch = 4, 128, 3
    caches = [make_cache("cuda", layers=1, pages=batch * (ctx // 16 + 2), heads=hkv, d=d, kv_dtype=kv)
              for kv in (None, FP8)]
    ks = [randn((ctx, hkv, d), torch.float16) for _ in range(batch)]
    vs = [randn((ctx, hkv, d), torch.float16) for _ in range(batch)]
    caches[1].calibrate(0, torch.cat(ks), torch.cat(vs))
    ids = []
    for cache in caches:
        ids = [cache.add_sequence() for _ in range(batch)]
        cache.append(0, ids, torch.cat(ks), torch.cat(vs), [ctx] * batch)
    q = randn((batch, hkv * group, d), torch.float16)
    out16, out8 = (flashkernel.paged_decode_attention(q, cache, 0, ids) for cache in caches)
    err_max, err_mean = fp8_error(out8, out16)
    print(f"fp8 vs fp16 cache, ctx={ctx} group={group}: max abs {(out8.double() - out16.double()).abs().max():.3e} "
          f"({err_max:.3f} of max |out|), mean abs {(out8.double() - out16.double()).abs().mean():.3e} "
          f"({err_mean:.3f} of mean |out|)")
    assert 1e-4 < err_mean <= FP8_MEAN_REL_ERROR and err_max <= FP8_MAX_REL_ERROR, (err_max, err_mean)


@gpu
def test_fp8_decode_ring_variants_only_and_deterministic():
    cache, ids, q, out = check_decode([300, 17], hq=8, hkv=2, d=64, dtype=torch.float16, kv_dtype=FP8)
    table, lens = cache.page_table(ids, 1)
    args = (q, cache.pool, 1, table, lens, 300, None, True)
    scales = {"k_scale": cache.k_scale, "v_scale": cache.v_scale}
    for variant in (4, 5):  # the deep and the 2-stage ring read FP8 alike
        got = torch.ops.flashkernel.paged_decode_attention(*args, variant=variant, **scales)
        assert torch.equal(got, torch.ops.flashkernel.paged_decode_attention(*args, variant=variant, **scales))
        torch.testing.assert_close(got, out, rtol=2e-3, atol=2e-3)
    for variant in (0, 1, 2, 3):
        with pytest.raises(ValueError, match="argument 'variant' must be -1 \\(auto\\), 4 or 5 for a float8 pool"):
            torch.ops.flashkernel.paged_decode_attention(*args, variant=variant, **scales)


@gpu
def test_fp8_ops_opcheck_and_compile():
    cache = make_cache("cuda", d=64, heads=2, kv_dtype=FP8)
    cache.set_scales(0, 0.01, 0.02)
    ids, _ = fill(cache, 0, [40, 3], [40], "cuda")
    table, lens = cache.page_table(ids, 0)
    scales = {"k_scale": cache.k_scale, "v_scale": cache.v_scale}
    q = randn((2, 4, 64), torch.float16)
    # opcheck's test_schema is left out: its aliasing check runs elementwise math on every input,
    # which torch 2.11 does not implement for float8_e4m3fn tensors ("mul_cuda" not implemented);
    # the faketensor, autograd-registration and AOT-dispatch checks run as for 16-bit pools.
    checks = ("test_faketensor", "test_autograd_registration", "test_aot_dispatch_dynamic")
    torch.library.opcheck(torch.ops.flashkernel.paged_decode_attention.default,
                          (q, cache.pool, 0, table, lens, 40, None), scales, test_utils=checks)
    pages = torch.tensor(cache.pages(ids[0]), dtype=torch.int32, device="cuda")
    torch.library.opcheck(torch.ops.flashkernel.kv_cache_gather.default, (cache.pool, 0, pages, 40),
                          {**scales, "out_dtype": torch.float16}, test_utils=checks)
    k = randn((2, 2, 64), torch.float16)
    slots = torch.tensor([100, 101], device="cuda")
    torch.library.opcheck(torch.ops.flashkernel.kv_cache_append.default, (cache.pool, 1, slots, k, k), scales,
                          test_utils=checks)
    f = torch.compile(lambda q: torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, table, lens, 40,
                                                                             **scales) * 2, fullgraph=True)
    torch.testing.assert_close(f(q), torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, table, lens,
                                                                                  40, **scales) * 2)


@gpu
def test_fp8_ops_bad_inputs_name_the_argument():
    cache = make_cache("cuda", d=64, heads=2, kv_dtype=FP8)
    ids, _ = fill(cache, 0, [5], [5], "cuda")
    table, lens = cache.page_table(ids, 0)
    pool, ks, vs = cache.pool, cache.k_scale, cache.v_scale
    q = randn((1, 4, 64), torch.float16)
    decode = torch.ops.flashkernel.paged_decode_attention
    with pytest.raises(ValueError, match="argument 'k_scale' is required for a float8_e4m3fn pool"):
        decode(q, pool, 0, table, lens, 5)
    with pytest.raises(ValueError, match="argument 'v_scale' must have shape \\[2, 2\\]"):
        decode(q, pool, 0, table, lens, 5, k_scale=ks, v_scale=vs[:1])
    with pytest.raises(TypeError, match="argument 'k_scale' must be float32"):
        decode(q, pool, 0, table, lens, 5, k_scale=ks.double(), v_scale=vs)
    with pytest.raises(TypeError, match="argument 'q' must be float16 or bfloat16 for a float8_e4m3fn pool"):
        decode(q.float(), pool, 0, table, lens, 5, k_scale=ks, v_scale=vs)
    with pytest.raises(ValueError, match="argument 'k_scale' must be a CUDA tensor"):
        decode(q, pool, 0, table, lens, 5, k_scale=ks.cpu(), v_scale=vs)
    pages = torch.tensor(cache.pages(ids[0]), dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="argument 'out_dtype' is required"):
        torch.ops.flashkernel.kv_cache_gather(pool, 0, pages, 5, k_scale=ks, v_scale=vs)
    with pytest.raises(TypeError, match="argument 'out_dtype' must be torch.float16 or torch.bfloat16"):
        torch.ops.flashkernel.kv_cache_gather(pool, 0, pages, 5, k_scale=ks, v_scale=vs, out_dtype=torch.float32)
    k = randn((1, 2, 64), torch.float16)
    slot = torch.tensor([3], device="cuda")
    with pytest.raises(ValueError, match="argument 'v_scale' is required"):
        torch.ops.flashkernel.kv_cache_append(pool, 0, slot, k, k, k_scale=ks)
    with pytest.raises(TypeError, match="arguments 'v' and 'k' must have the same dtype"):
        torch.ops.flashkernel.kv_cache_append(pool, 0, slot, k, k.bfloat16(), k_scale=ks, v_scale=vs)
    # Scales on a 16-bit pool are refused, not ignored.
    c16 = make_cache("cuda", d=64, heads=2)
    with pytest.raises(ValueError, match="argument 'k_scale' must be None for a Half pool"):
        torch.ops.flashkernel.kv_cache_append(c16.pool, 0, slot, k, k, k_scale=ks, v_scale=vs)
    with pytest.raises(TypeError, match="argument 'out_dtype' must be None or the pool's dtype"):
        torch.ops.flashkernel.kv_cache_gather(c16.pool, 0, pages, 0, out_dtype=torch.bfloat16)


@gpu
def test_fp8_ops_report_out_of_range_indices():
    """The index guards hold for an FP8 pool too: a bad page id is reported, its tokens come out NaN
    (gather) or its sequence's output does (decode), the others are exact."""
    cache = make_cache("cuda", layers=1, pages=8, heads=2, d=64, kv_dtype=FP8)
    cache.set_scales(0, 0.01, 0.02)
    ids, written = fill(cache, 0, [40, 40], [40], "cuda")
    ks, vs = cache.k_scale, cache.v_scale
    pages = torch.tensor(cache.pages(ids[0]), dtype=torch.int32, device="cuda")
    bad = pages.clone()
    bad[1] = cache.num_pages
    with pytest.raises(ValueError, match="kv_cache_gather: argument 'pages' has entries outside"):
        torch.ops.flashkernel.kv_cache_gather(cache.pool, 0, bad, 40, k_scale=ks, v_scale=vs, out_dtype=torch.float16)
    k, _ = torch.ops.flashkernel.kv_cache_gather(cache.pool, 0, bad, 40, check_indices=False, k_scale=ks, v_scale=vs,
                                                 out_dtype=torch.float16)
    want_k, _ = fp8_reference(cache, 0, *written[ids[0]], torch.float16)
    assert torch.isnan(k[:, 16:32]).all()
    assert torch.equal(k[:, :16], want_k[:16].transpose(0, 1)) and torch.equal(k[:, 32:], want_k[32:].transpose(0, 1))
    table, lens = cache.page_table(ids, 0)
    q = randn((2, 4, 64), torch.float16)
    good = torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, table, lens, 40, k_scale=ks, v_scale=vs)
    bad_table = table.clone()
    bad_table[1, 1] = -1
    with pytest.raises(ValueError, match="argument 'page_table' has entries outside"):
        torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, bad_table, lens, 40, k_scale=ks, v_scale=vs)
    out = torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, bad_table, lens, 40, check_indices=False,
                                                       k_scale=ks, v_scale=vs)
    assert torch.isnan(out[1]).all() and torch.equal(out[0], good[0])


def test_fp8_decode_op_compiles_with_every_argument():
    # The fake implementation takes the FP8 arguments; on CPU tensors the op's own device check answers.
    def f(q, pool, table, lens, ks, vs):
        return torch.ops.flashkernel.paged_decode_attention(q, pool, 0, table, lens, 16, scale=0.125,
                                                            check_indices=False, variant=-1, k_scale=ks, v_scale=vs)

    args = (torch.randn(1, 2, 64, dtype=torch.float16), torch.zeros(1, 2, 2, 16, 2, 64, dtype=FP8),
            torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, dtype=torch.int32), torch.ones(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="argument 'q' must be a CUDA tensor"):
        torch.compile(f, fullgraph=True)(*args)


# ---------------------------------------------------------------- Triton twin of gather
@triton_twin
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("page_size", [8, 32])
def test_triton_gather_bit_identical(page_size, d, dtype):
    dev = triton_device()
    cache = make_cache(dev, layers=2, pages=24, heads=2, d=d, page_size=page_size, dtype=dtype)
    poison(cache)
    ids, written = fill(cache, 1, [1, 7, 40], [9, 1], dev)
    check_gather_bit_identical(cache, 1, ids, written, flashkernel.triton.kv_cache_gather)
    f = cache.fork(ids[2])
    k, v = randn((3, 2, d), dtype, dev), randn((3, 2, d), dtype, dev)
    cache.append(1, [f], k, v, [3])
    kk, vv = flashkernel.triton.kv_cache_gather(cache, 1, f)
    assert torch.equal(kk, torch.cat([written[ids[2]][0], k]).transpose(0, 1))
    assert torch.equal(vv, torch.cat([written[ids[2]][1], v]).transpose(0, 1))


@triton_twin
@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_gather_fp8_matches_the_quantized_reference(dtype):
    dev = triton_device()
    cache = make_cache(dev, layers=2, pages=24, heads=2, d=64, page_size=8, dtype=dtype, kv_dtype=FP8)
    poison(cache)
    cache.set_scales(1, fp8_test_scales(2, 0), fp8_test_scales(2, 1))
    ids, written = fill(cache, 1, [1, 7, 40], [9, 1], dev)
    for s in ids:
        k, v = flashkernel.triton.kv_cache_gather(cache, 1, s)
        want_k, want_v = fp8_reference(cache, 1, *written[s], dtype)
        for got, want in ((k, want_k.transpose(0, 1)), (v, want_v.transpose(0, 1))):
            if interpreter_rounding_slack(dtype) > 1:  # the CPU interpreter truncates fp32 -> bf16: 1 ulp
                torch.testing.assert_close(got, want, rtol=2 ** -7, atol=0)
            else:
                assert torch.equal(got, want), f"sequence {s}: differs from the quantized reference"


@triton_twin
def test_triton_gather_bad_inputs():
    from flashkernel.triton.kv_cache import gather_pages

    cache = make_cache(triton_device(), d=64)
    with pytest.raises(ValueError, match="argument 'layer'"):
        flashkernel.triton.kv_cache_gather(cache, 9, 0)
    with pytest.raises(ValueError, match="argument 'length'"):
        gather_pages(cache.pool, 0, torch.zeros(1, dtype=torch.int32), 17)
    with pytest.raises(TypeError, match="argument 'pages'"):
        gather_pages(cache.pool, 0, torch.zeros(1, dtype=torch.int64), 1)


# ---------------------------------------------------------------- Triton twin of append
def _append_both(dtype, kv_dtype, page_size, dev):
    """The same appends (interleaved chunks, a fork that copies its shared last page on write)
    through PagedKVCache.append and through the Triton twin, on two poisoned caches."""
    caches = [make_cache(dev, layers=2, pages=40, heads=2, d=64, page_size=page_size, dtype=dtype, kv_dtype=kv_dtype)
              for _ in range(2)]
    for cache in caches:
        poison(cache)
        if cache.quantized:
            cache.set_scales(1, fp8_test_scales(2, 0), fp8_test_scales(2, 1))
    appends = [caches[0].append, lambda *a: flashkernel.triton.kv_cache_append(caches[1], *a)]
    ids = [[c.add_sequence() for _ in range(3)] for c in caches]
    for counts in ([1, 7, 20], [1, 1, 1], [9, 0, 3]):
        k = randn((sum(counts), 2, 64), dtype, dev, scale=4.0)  # some values past e4m3's range at these scales
        v = randn((sum(counts), 2, 64), dtype, dev, scale=4.0)
        for append, seq in zip(appends, ids):
            append(1, seq, k, v, counts)
    forks = [c.fork(seq[2]) for c, seq in zip(caches, ids)]
    k, v = randn((3, 2, 64), dtype, dev), randn((3, 2, 64), dtype, dev)
    for append, f in zip(appends, forks):
        append(1, [f], k, v, [3])
    return caches


@triton_twin
@pytest.mark.parametrize("kv_dtype", [None, FP8])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("page_size", [8, 32])
def test_triton_append_writes_what_the_cache_writes(page_size, dtype, kv_dtype):
    ref, twin = _append_both(dtype, kv_dtype, page_size, triton_device())
    assert ref.pages(0) == twin.pages(0) and ref.free_pages() == twin.free_pages()
    # Byte for byte, the poison (NaN) of every slot nothing wrote included; FP8: e4m3 rounded to
    # nearest even and saturated, as torch's cast after the clamp (the CPU cache) and the CUDA op.
    assert torch.equal(twin.pool.view(torch.uint8), ref.pool.view(torch.uint8))


@triton_twin
def test_triton_e4m3_rounding_matches_torch_on_every_edge():
    """The twin's fp32 -> e4m3 code (integer arithmetic) against torch's cast: every e4m3 value,
    the midpoints between neighbours (ties to even), values just either side of them, the
    subnormal range and zeros of both signs."""
    from flashkernel.triton.kv_cache import append_rows

    dev = triton_device()
    codes = torch.arange(256, dtype=torch.uint8)
    vals = codes.view(FP8).float()
    vals = vals[~vals.isnan()].sort().values
    mids = (vals[:-1] + vals[1:]) / 2
    x = torch.cat([vals, mids, mids.nextafter(torch.tensor(float("inf"))), mids.nextafter(torch.tensor(-float("inf"))),
                   torch.linspace(-0.03, 0.03, 301), torch.tensor([0.0, -0.0, 448.0, -448.0])])
    n = x.numel()
    pool = torch.zeros((1, n, 2, 1, 1, 1), dtype=FP8, device=dev)  # page size 1, head_dim 1: one value a page
    ones = torch.ones((1, 1), dtype=torch.float32)
    rows = x.to(torch.float32).view(n, 1, 1)
    # k, v as fp32 rows would not be a cache dtype; the kernel only reads them, and fp32 keeps x exact.
    append_rows(pool, 0, torch.arange(n, dtype=torch.int32), rows.to(dev), rows.to(dev), ones, ones)
    got = pool[0, :, 0, 0, 0, 0].cpu().view(torch.uint8)
    want = x.clamp(-448.0, 448.0).to(FP8).view(torch.uint8)
    bad = (got != want).nonzero().flatten()[:5].tolist()
    assert not bad, f"e4m3 codes differ from torch's at {[(x[i].item(), got[i].item(), want[i].item()) for i in bad]}"


@triton_twin
def test_triton_append_checks_its_arguments():
    cache = make_cache(triton_device(), d=64)
    s = cache.add_sequence()
    k = randn((2, 2, 64), torch.float16, triton_device())
    with pytest.raises(ValueError, match="argument 'k'"):
        flashkernel.triton.kv_cache_append(cache, 0, [s], k, k[:1])
    with pytest.raises(TypeError, match="argument 'v'"):
        flashkernel.triton.kv_cache_append(cache, 0, [s], k, k.bfloat16(), [2])
    with pytest.raises(ValueError, match="argument 'num_tokens'"):
        flashkernel.triton.kv_cache_append(cache, 0, [s], k, k, [1, 1])
    assert cache.seq_len(s, 0) == 0


# ---------------------------------------------------------------- Triton twin of decode
@triton_twin
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("heads", [(32, 8), (4, 4), (6, 2)])
@pytest.mark.parametrize("ctx", [1, 17, 300])
def test_triton_decode_matches_reference(ctx, heads, d, dtype):
    # Group sizes 4, 1 and 3 (the twin pads a group to 16 rows for tl.dot).
    check_decode([ctx], hq=heads[0], hkv=heads[1], d=d, dtype=dtype, device=triton_device(),
                 decode=flashkernel.triton.paged_decode_attention)


@triton_twin
@pytest.mark.parametrize("heads", [(12, 1), (8, 4)])
@pytest.mark.parametrize("page_size", [8, 256])
@pytest.mark.parametrize("kv_dtype", [None, FP8])
def test_triton_decode_mixed_lengths_and_fp8(kv_dtype, page_size, heads):
    # 1000 and 1300 tokens run several splits of the context, merged by log-sum-exp; 12 query heads
    # on one KV head make a group of 12; 4 KV heads have FP8 scales of their own.
    check_decode([1, 15, 16, 17, 300, 1300, 2, 1000], hq=heads[0], hkv=heads[1], d=128, dtype=torch.bfloat16,
                 page_size=page_size, kv_dtype=kv_dtype, device=triton_device(),
                 decode=flashkernel.triton.paged_decode_attention)


@triton_twin
def test_triton_decode_custom_scale_and_shared_pages():
    # A forked sequence reads the pages it shares with its parent, then its own.
    dev = triton_device()
    cache = make_cache(dev, layers=1, pages=32, heads=2, d=64, page_size=8)
    poison(cache)
    ids, written = fill(cache, 0, [40], [40], dev)
    f = cache.fork(ids[0])
    k, v = randn((5, 2, 64), torch.float16, dev), randn((5, 2, 64), torch.float16, dev)
    cache.append(0, [f], k, v, [5])
    q = randn((2, 8, 64), torch.float16, dev)
    out = flashkernel.triton.paged_decode_attention(q, cache, 0, [ids[0], f], scale=0.3)
    kvs = [written[ids[0]], (torch.cat([written[ids[0]][0], k]), torch.cat([written[ids[0]][1], v]))]
    assert_within_torch_error(out, reference_decode(q, kvs, 0.3), sdpa_lowp(q, kvs, 0.3), floor=3e-4,
                              what="fork, scale 0.3")


@triton_twin
def test_triton_decode_bad_inputs_name_the_argument():
    from flashkernel.triton.kv_cache import decode_pages

    dev = triton_device()
    cache = make_cache(dev, d=64, heads=2)
    ids, _ = fill(cache, 0, [5], [5], dev)
    empty = cache.add_sequence()
    q = randn((1, 4, 64), torch.float16, dev)
    twin = flashkernel.triton.paged_decode_attention
    with pytest.raises(ValueError, match="argument 'q' must have one row per sequence"):
        twin(randn((2, 4, 64), torch.float16, dev), cache, 0, ids)
    with pytest.raises(TypeError, match="argument 'q' must have the same dtype"):
        twin(q.bfloat16(), cache, 0, ids)
    with pytest.raises(ValueError, match="argument 'q' must be"):
        twin(randn((1, 3, 64), torch.float16, dev), cache, 0, ids)  # 3 heads over 2 KV heads
    with pytest.raises(ValueError, match="argument 'seq_ids'"):
        twin(q, cache, 0, [empty])
    with pytest.raises(ValueError, match="argument 'scale'"):
        twin(q, cache, 0, ids, scale=0.0)
    with pytest.raises(ValueError, match="argument 'layer'"):
        twin(q, cache, 7, ids)
    table, lens = cache.page_table(ids, 0)
    with pytest.raises(ValueError, match="argument 'max_seq_len'"):
        decode_pages(q, cache.pool, 0, table.to(dev), lens.to(dev), table.shape[1] * 16 + 1)
    with pytest.raises(ValueError, match="argument 'page_table'"):
        decode_pages(q, cache.pool, 0, table.to(dev).long(), lens.to(dev), 5)


# ---------------------------------------------------------------- hardening (issue 18)
def _state(cache):
    """Everything observable about the bookkeeping, for "nothing changed" checks."""
    ids = cache.sequence_ids()
    return ({s: (cache.pages(s), [cache.seq_len(s, l) for l in range(cache.num_layers)]) for s in ids},
            cache.free_pages(), [cache.refcount(p) for p in range(cache.num_pages)])


def test_constructor_rejects_layouts_the_kernels_cannot_run():
    # Accepted here before, rejected by the kernels only at the first append, after the bookkeeping.
    with pytest.raises(ValueError, match="argument 'num_kv_heads' must be in \\[1, 1024\\]"):
        make_cache("cpu", heads=1025, pages=1)
    with pytest.raises(ValueError, match="argument 'num_pages'"):
        make_cache("cpu", pages=2**31)
    with pytest.raises(ValueError, match="argument 'num_layers' is too large"):
        make_cache("cpu", layers=2**40, pages=2**30)
    make_cache("cpu", heads=1024, pages=1).check_invariants()


def test_reserve_and_append_of_huge_counts_are_out_of_pages():
    cache = make_cache("cpu", page_size=8, pages=4)
    s = cache.add_sequence()
    cache.append(0, [s], randn((3, 2, 64), torch.float16, "cpu"), randn((3, 2, 64), torch.float16, "cpu"), [3])
    before = _state(cache)
    for n in (2**63 - 1, 2**63 - 8, 2**62, 30):
        with pytest.raises(OutOfPagesError, match="out of pages"):
            cache.reserve(s, n)
        assert _state(cache) == before
    cache.reserve(s, 29)  # exactly the whole pool
    assert cache.free_pages() == []


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=gpu)])
@pytest.mark.parametrize("failing", ["_write_tokens", "_copy_pages"])
def test_append_rolls_back_when_moving_the_data_fails(device, failing, monkeypatch):
    cache = make_cache(device, page_size=8, pages=16)
    ids, written = fill(cache, 0, [13, 5], [13], device)
    f = cache.fork(ids[0])  # its partial second page is shared: the next append copies it
    before = _state(cache)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("simulated out of memory")

    monkeypatch.setattr(cache, failing, out_of_memory)
    k, v = randn((12, 2, 64), torch.float16, device), randn((12, 2, 64), torch.float16, device)
    with pytest.raises(torch.OutOfMemoryError, match="simulated"):
        cache.append(0, [f, ids[1]], k, v, [9, 3])
    assert _state(cache) == before, "a failed append left its bookkeeping behind"
    cache.check_invariants()
    monkeypatch.undo()
    # The cache is still fully usable: the same append now goes through, and reads back exactly.
    cache.append(0, [f, ids[1]], k, v, [9, 3])
    cache.check_invariants()
    kf, _ = cache.gather(0, f)
    assert torch.equal(kf, torch.cat([written[ids[0]][0], k[:9]]).transpose(0, 1))
    k1, _ = cache.gather(0, ids[1])
    assert torch.equal(k1, torch.cat([written[ids[1]][0], k[9:]]).transpose(0, 1))


def test_threads_sharing_one_cache():
    """Threading contract: several threads append to, fork, free and read their own sequences of
    one shared cache at once; afterwards every invariant holds and every token reads back."""
    import threading

    cache = make_cache("cpu", page_size=8, pages=4096, layers=1)
    errors = []

    def work(seed):
        try:
            g = torch.Generator().manual_seed(seed)
            mine = {}
            for step in range(300):
                op = int(torch.randint(0, 10, (1,), generator=g))
                if len(mine) < 2 or op == 0:
                    mine[cache.add_sequence()] = torch.empty(0, 2, 64, dtype=torch.float16)
                    continue
                s = list(mine)[int(torch.randint(0, len(mine), (1,), generator=g))]
                if op == 1:
                    cache.free_sequence(s)
                    del mine[s]
                elif op == 2:
                    mine[cache.fork(s)] = mine[s]
                elif op == 3:
                    k, _ = cache.gather(0, s)
                    assert torch.equal(k, mine[s].transpose(0, 1)), f"sequence {s} reads back wrong"
                else:
                    n = int(torch.randint(1, 6, (1,), generator=g))
                    k = torch.randn(n, 2, 64, generator=g).half()
                    cache.append(0, [s], k, k, [n])
                    mine[s] = torch.cat([mine[s], k])
            for s, want in mine.items():
                k, _ = cache.gather(0, s)
                assert torch.equal(k, want.transpose(0, 1)), f"sequence {s} reads back wrong at the end"
        except Exception as e:  # reported by the main thread
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    cache.check_invariants()


# Device-side indices: the torch ops check every slot, page id and length they read from device
# memory; an out-of-range one raises ValueError naming the argument, and nothing outside the valid
# entries is read or written (the pool is compared bit for bit against the expected result).
def _patterned_cache(pages=8, page_size=16):
    cache = make_cache("cuda", layers=2, pages=pages, heads=2, d=64, page_size=page_size)
    cache.pool.copy_(torch.randn(cache.pool.shape, device="cuda").half())
    return cache


def _write_slot(pool, layer, slot, k, v, page_size):
    pool[layer, slot // page_size, 0, :, slot % page_size] = k
    pool[layer, slot // page_size, 1, :, slot % page_size] = v


@gpu
def test_append_op_skips_and_reports_out_of_range_slots():
    cache = _patterned_cache()
    pool, n_slots = cache.pool, cache.num_pages * cache.page_size
    for bad in (-1, n_slots, -2**62, 2**62):
        before = pool.clone()
        slots = torch.tensor([5, bad, n_slots - 1], dtype=torch.int64, device="cuda")
        k, v = randn((3, 2, 64), torch.float16), randn((3, 2, 64), torch.float16)
        with pytest.raises(ValueError, match="kv_cache_append: argument 'slots' has entries outside \\[0, "
                                             f"num_pages \\* page_size = {n_slots}\\)"):
            torch.ops.flashkernel.kv_cache_append(pool, 1, slots, k, v)
        want = before.clone()
        _write_slot(want, 1, 5, k[0], v[0], cache.page_size)  # the valid tokens of the call are written
        _write_slot(want, 1, n_slots - 1, k[2], v[2], cache.page_size)
        assert torch.equal(pool, want), f"slot {bad}: the pool changed outside the valid slots"
    # No stale error: the next valid call works.
    torch.ops.flashkernel.kv_cache_append(pool, 0, torch.tensor([0], device="cuda"), k[:1], v[:1])
    assert torch.equal(pool[0, 0, 0, :, 0], k[0])


@gpu
def test_copy_pages_op_skips_and_reports_out_of_range_pages():
    cache = _patterned_cache()
    pool, n = cache.pool, cache.num_pages
    before = pool.clone()
    src = torch.tensor([0, -1, 2, 1], dtype=torch.int32, device="cuda")
    dst = torch.tensor([3, 4, n, 2**31 - 1], dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="kv_cache_copy_pages: argument 'src' has entries outside \\[0, num_pages"):
        torch.ops.flashkernel.kv_cache_copy_pages(pool, src, dst)
    want = before.clone()
    want[:, 3] = before[:, 0]  # only the valid pair was copied
    assert torch.equal(pool, want)
    with pytest.raises(ValueError, match="argument 'dst'"):
        torch.ops.flashkernel.kv_cache_copy_pages(pool, src[2:3], dst[2:3])
    assert torch.equal(pool, want)


@gpu
def test_gather_op_reports_out_of_range_pages_and_never_reads_them():
    cache = _patterned_cache()
    pool, ps = cache.pool, cache.page_size
    before = pool.clone()
    for bad in (-1, cache.num_pages, 2**31 - 1):
        pages = torch.tensor([2, bad, 0], dtype=torch.int32, device="cuda")
        with pytest.raises(ValueError, match="kv_cache_gather: argument 'pages' has entries outside"):
            torch.ops.flashkernel.kv_cache_gather(pool, 1, pages, 3 * ps)
        k, v = torch.ops.flashkernel.kv_cache_gather(pool, 1, pages, 3 * ps, check_indices=False)
        for out, kv in ((k, 0), (v, 1)):
            assert torch.equal(out[:, :ps], pool[1, 2, kv])
            assert torch.isnan(out[:, ps:2 * ps]).all(), "the bad page's tokens must be NaN"
            assert torch.equal(out[:, 2 * ps:], pool[1, 0, kv])
    # A page id past `length`'s pages is never read, so it is not an error.
    pages = torch.tensor([2, -7], dtype=torch.int32, device="cuda")
    k, _ = torch.ops.flashkernel.kv_cache_gather(pool, 1, pages, ps)
    assert torch.equal(k, pool[1, 2, 0])
    assert torch.equal(pool, before)


@gpu
@pytest.mark.parametrize("ctx", [40, 3000])  # one split / several splits merged by the combine kernel
def test_decode_op_reports_out_of_range_page_table_and_seq_lens(ctx):
    page_size = 16
    width = math.ceil(ctx / page_size)
    cache = make_cache("cuda", layers=1, pages=3 * width + 2, heads=2, d=64, page_size=page_size)
    ids, _ = fill(cache, 0, [ctx, ctx, ctx], [ctx], "cuda")
    table, lens = cache.page_table(ids, 0)
    before = cache.pool.clone()
    q = randn((3, 4, 64), torch.float16)
    good = torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, table, lens, ctx)
    assert not torch.isnan(good).any()

    bad_table = table.clone()
    bad_table[1, width // 2] = cache.num_pages  # a page id inside sequence 1's length
    with pytest.raises(ValueError, match="paged_decode_attention: argument 'page_table' has entries outside"):
        torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, bad_table, lens, ctx)
    out = torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, bad_table, lens, ctx, check_indices=False)
    assert torch.isnan(out[1]).all()
    assert torch.equal(out[0], good[0]) and torch.equal(out[2], good[2])

    for bad_len in (width * page_size + 1, 0, -5, 2**31 - 1):
        bad_lens = lens.clone()
        bad_lens[2] = bad_len
        with pytest.raises(ValueError, match="paged_decode_attention: argument 'seq_lens' has entries outside"):
            torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, table, bad_lens, ctx)
        out = torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, table, bad_lens, ctx,
                                                           check_indices=False)
        assert torch.isnan(out[2]).all(), f"seq_len {bad_len}"
        assert torch.equal(out[:2], good[:2])
    # Bit for bit: the pages nothing wrote (the pool is torch.empty) may hold NaN, and NaN != NaN.
    assert torch.equal(cache.pool.view(torch.int16), before.view(torch.int16))
    # No stale error afterwards.
    assert torch.equal(torch.ops.flashkernel.paged_decode_attention(q, cache.pool, 0, table, lens, ctx), good)


def test_paged_decode_op_compiles_with_every_argument():
    # As test_gelu_linear_compiles_with_every_argument: Inductor's lowering of the op with all its
    # arguments given, on CPU tensors, reaches the op's own device check.
    def f(q, pool, table, lens):
        return torch.ops.flashkernel.paged_decode_attention(q, pool, 0, table, lens, 16, scale=0.125,
                                                            check_indices=False, variant=-1)

    args = (torch.randn(1, 2, 64, dtype=torch.float16), torch.zeros(1, 2, 2, 16, 2, 64, dtype=torch.float16),
            torch.zeros(1, 1, dtype=torch.int32), torch.ones(1, dtype=torch.int32))
    with pytest.raises(ValueError, match="argument 'q' must be a CUDA tensor"):
        torch.compile(f, fullgraph=True)(*args)
