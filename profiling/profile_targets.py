"""One representative launch of every kernel family, for Nsight Compute (profiling/profile_all.sh).

Each family runs its work once un-ranged (JIT, autotuning, CUDA-graph capture, first-call
allocations), then once more inside two nested NVTX push/pop ranges, "fk" and the family's name,
which Nsight Compute writes as the range stack fk/<family> and selects with
`--nvtx --nvtx-include "fk/<family>/"` (in its filter syntax "/" separates nested push/pop ranges).
Kernels launched outside the ranges are not profiled.

    python3 profiling/profile_targets.py --list [--only a,b]     # family names (with what they need)
    python3 profiling/profile_targets.py [--only a,b] --work-json WORK.json

--work-json records, per family, the useful work of the ranged call: FLOPs (attention
4*B*H*N^2*d, halved for causal; gelu_linear 2*M*N*K; ...) and the bytes that must move (inputs
read once, outputs written once), so the roofline can place a family whose counters are missing;
and, for a family that could not run here, why. It is rewritten after every family, so a run cut
short keeps what it did. A family that fails is recorded and the run goes on.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

RANGE_ROOT = "fk"  # the outer NVTX range; the family's name is the inner one


class Skip(Exception):
    """A family this library build or this GPU cannot run; the message says why."""


@dataclass
class Work:
    """What the ranged call must do, counted from the problem (not from counters)."""
    config: str
    flops: float
    bytes: float
    # Which units the FLOPs run on: "tensor", "fp32" (CUDA cores) or "none" (pure data movement).
    flops_kind: str
    # A family whose launches also lead this one's (gpt2_decode: the prefill that precedes the
    # decode step inside the same call); parse_ncu.py leaves those launches out.
    subtract: str | None = None


@dataclass
class Family:
    name: str
    setup: Callable[[], tuple[Callable[[], object], Work]]  # -> (the call to profile, its work)
    needs: tuple[str, ...] = ()  # families to profile with it: their launches lead its call (Work.subtract)
    hopper_only: bool = False


def _cuda_randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, device="cuda", dtype=dtype)


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# ---------------------------------------------------------------------------------------- families
def vector_add():
    import flashkernel
    n = 64 * 2**20  # 256 MiB per fp32 operand: far past L2
    a, b = _cuda_randn(n), _cuda_randn(n)
    return (lambda: flashkernel.vector_add(a, b)), Work(f"n={n} float32", flops=n, bytes=3 * _nbytes(a),
                                                        flops_kind="fp32")


def reduce_full():
    import flashkernel
    x = _cuda_randn(100_000_000)
    return (lambda: flashkernel.reduce_sum(x)), Work("n=100000000 float32 op=sum", flops=x.numel(),
                                                     bytes=_nbytes(x) + 4, flops_kind="fp32")


def reduce_rows():
    import flashkernel
    rows, cols = 16384, 4096
    x = _cuda_randn(rows, cols)
    return (lambda: flashkernel.reduce_sum(x, -1)), Work(f"rows={rows} cols={cols} float32 op=sum dim=-1",
                                                         flops=x.numel(), bytes=_nbytes(x) + 4 * rows,
                                                         flops_kind="fp32")


def attention(backend: str, d: int, causal: bool):
    def setup():
        import flashkernel
        # B*H = 64 heads of 4096 queries: 2048+ query tiles, several waves on any current GPU.
        b, h, n = 4, 16, 4096
        q, k, v = (_cuda_randn(b, h, n, d, dtype=torch.bfloat16) for _ in range(3))
        work = Work(f"B={b} H={h} N={n} d={d} causal={int(causal)} bfloat16 backend={backend}",
                    flops=4.0 * b * h * n * n * d * (0.5 if causal else 1.0),
                    bytes=4 * _nbytes(q),  # q, k, v read, out written
                    flops_kind="tensor")
        return (lambda: flashkernel.flash_attention(q, k, v, causal=causal, backend=backend)), work
    return setup


def gelu_linear(backend: str, m: int, k: int, n: int):
    def setup():
        import flashkernel
        dtype = torch.float16
        x = _cuda_randn(m, k, dtype=dtype)
        w = (_cuda_randn(n, k) * k ** -0.5).to(dtype)
        bias = _cuda_randn(n, dtype=dtype)
        work = Work(f"M={m} K={k} N={n} act=tanh float16 backend={backend}", flops=2.0 * m * n * k,
                    bytes=_nbytes(x, w, bias) + m * n * 2, flops_kind="tensor")
        return (lambda: flashkernel.gelu_linear(x, w, bias, approximate="tanh", backend=backend)), work
    return setup


def _rope_inputs():
    b, h, n, d = 8, 32, 2048, 128
    q, k = (_cuda_randn(b, h, n, d, dtype=torch.float16) for _ in range(2))
    # Per rotated element: x*cos -/+ y*sin, 3 FLOPs; q and k read once and written once.
    return q, k, f"B={b} Hq=Hk={h} N={n} d={d} float16 style=neox", 3.0 * (q.numel() + k.numel())


def rope():
    import flashkernel
    q, k, config, flops = _rope_inputs()
    cos, sin = flashkernel.rope_cache(q.shape[2], q.shape[3])
    return (lambda: flashkernel.rope(q, k, cos, sin)), Work(config + " tables=float32", flops=flops,
                                                            bytes=2 * _nbytes(q, k) + _nbytes(cos, sin),
                                                            flops_kind="fp32")


def rope_fused():
    import flashkernel
    q, k, config, flops = _rope_inputs()
    # The angles are computed in the kernel (sincos per pair): FLOPs counted as the rotation only.
    return (lambda: flashkernel.rope_fused(q, k)), Work(config + " angles in-kernel", flops=flops,
                                                        bytes=2 * _nbytes(q, k), flops_kind="fp32")


def _norm_inputs():
    rows, cols = 16384, 4096
    dtype = torch.float16
    return rows, cols, _cuda_randn(rows, cols, dtype=dtype), _cuda_randn(rows, cols, dtype=dtype)


def add_layernorm():
    import flashkernel
    rows, cols, x, r = _norm_inputs()
    w, lb = _cuda_randn(cols, dtype=x.dtype), _cuda_randn(cols, dtype=x.dtype)
    # Per element: add 1, mean 1, variance 2, normalize 2, affine 2 = 8 FLOPs. Reads x and
    # residual, writes the sum and the normalized rows, reads the two [C] vectors.
    return (lambda: flashkernel.add_layernorm(x, r, weight=w, ln_bias=lb)), Work(
        f"rows={rows} cols={cols} float16", flops=8.0 * x.numel(), bytes=4 * _nbytes(x) + _nbytes(w, lb),
        flops_kind="fp32")


def add_rms_norm():
    import flashkernel
    rows, cols, x, r = _norm_inputs()
    w = _cuda_randn(cols, dtype=x.dtype)
    # Per element: add 1, sum of squares 2, scale 1, weight 1 = 5 FLOPs.
    return (lambda: flashkernel.add_rms_norm(x, r, weight=w)), Work(
        f"rows={rows} cols={cols} float16", flops=5.0 * x.numel(), bytes=4 * _nbytes(x) + _nbytes(w),
        flops_kind="fp32")


KV_HEADS, HEAD_DIM, PAGE = 8, 128, 16


def kv_cache_append():
    import flashkernel
    # A prefill-sized append: 16 sequences x 4096 tokens. The pool holds two such appends (the
    # warm-up call writes the first 4096 tokens of each sequence, the profiled one the next).
    batch, tokens = 16, 4096
    cache = flashkernel.PagedKVCache(1, batch * 2 * tokens // PAGE, KV_HEADS, HEAD_DIM, page_size=PAGE,
                                     dtype=torch.float16)
    ids = [cache.add_sequence() for _ in range(batch)]
    k = _cuda_randn(batch * tokens, KV_HEADS, HEAD_DIM, dtype=torch.float16)
    v = torch.randn_like(k)
    # k and v read, the same bytes written into the pages, one int32 slot per token read.
    work = Work(f"batch={batch} tokens/seq={tokens} hkv={KV_HEADS} d={HEAD_DIM} page={PAGE} float16",
                flops=0, bytes=2 * _nbytes(k, v) + 4 * batch * tokens, flops_kind="none")
    return (lambda: cache.append(0, ids, k, v, num_tokens=[tokens] * batch)), work


def kv_cache_gather():
    import flashkernel
    from flashkernel.bench.ops.kv_cache import _filled_cache  # the benchmark's scattered-page cache

    seq_len = 32768
    cache, ids = _filled_cache(1, seq_len, KV_HEADS, PAGE)
    kv_bytes = 2 * KV_HEADS * seq_len * HEAD_DIM * 2
    return (lambda: flashkernel.kv_cache_gather(cache, 0, ids[0])), Work(
        f"len={seq_len} hkv={KV_HEADS} d={HEAD_DIM} page={PAGE} float16", flops=0, bytes=2 * kv_bytes,
        flops_kind="none")


def paged_decode():
    import flashkernel
    from flashkernel.bench.ops.kv_cache import _filled_cache

    batch, ctx, hq = 16, 4096, 32
    cache, ids = _filled_cache(batch, ctx, KV_HEADS, PAGE)
    q = _cuda_randn(batch, hq, HEAD_DIM, dtype=torch.float16)
    kv_bytes = batch * ctx * KV_HEADS * HEAD_DIM * 2 * 2
    # q K^T and P V: 4 FLOPs per (query head, key, dim); K/V read once, q read, out written.
    work = Work(f"batch={batch} ctx={ctx} hq/hkv={hq}/{KV_HEADS} d={HEAD_DIM} page={PAGE} float16 variant=auto",
                flops=4.0 * batch * hq * ctx * HEAD_DIM, bytes=kv_bytes + 2 * _nbytes(q), flops_kind="tensor")
    return (lambda: flashkernel.paged_decode_attention(q, cache, 0, ids)), work


# GPT-2 124M with random weights (made on the GPU, nothing downloaded), batch 8, prompt 128: the
# e2e benchmark's shapes. One engine per decode path, shared by the families that use it.
GPT2_BATCH, GPT2_PROMPT = 8, 128
_ENGINES: dict[str, object] = {}


def _gpt2_engine(decode: str):
    if decode not in _ENGINES:
        from flashkernel.bench.ops.e2e_gpt2 import DECODE_ENV, env_override
        from flashkernel.models import GPT2Engine

        # The engine reads its decode path from the environment when it is built.
        with env_override(DECODE_ENV, decode):
            _ENGINES[decode] = GPT2Engine.random(seed=0, dtype=torch.float16)
    return _ENGINES[decode]


def _gpt2_prompt():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 50257, (GPT2_BATCH, GPT2_PROMPT), generator=g)


def gpt2_prefill():
    from flashkernel.bench.ops.e2e_gpt2 import layer_weight_bytes

    engine = _gpt2_engine("graph")
    cfg, ids = engine.config, _gpt2_prompt()
    c, layers, vocab = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"]
    b, p = GPT2_BATCH, GPT2_PROMPT
    # Linear layers 12 C^2 MACs per token per layer; causal attention ~ 2 P^2 C per sequence per
    # layer; the LM head on each sequence's last row. Bytes: weights and the LM head read once,
    # the K/V written, the token and position embedding rows read (activations left out: a bound).
    flops = 2.0 * b * p * layers * 12 * c * c + 2.0 * b * p * p * c * layers + 2.0 * b * vocab * c
    nbytes = layer_weight_bytes(cfg, 2) + vocab * c * 2 + b * layers * 2 * p * c * 2 + (b * p + p) * c * 2
    work = Work(f"GPT-2 124M random weights, batch={b} prompt={p}, generate(max_new_tokens=1): prefill + first token",
                flops=flops, bytes=nbytes, flops_kind="tensor")
    return (lambda: engine.generate(ids, max_new_tokens=1)), work


def _gpt2_decode(decode: str):
    def setup():
        from flashkernel.bench.ops.e2e_gpt2 import decode_bytes

        engine = _gpt2_engine(decode)
        cfg, ids = engine.config, _gpt2_prompt()
        engine.generate(ids, max_new_tokens=2)
        if decode == "persistent" and not engine.last_stats.persistent_decode:
            raise Skip("the engine ran its decode step on the graph path (the persistent kernel does not fit "
                       "this GPU or shape), the same kernels as gpt2_decode")
        if decode == "fused" and not engine.last_stats.fused_decode:
            raise Skip("the engine ran the per-op layers (the fused ones do not fit this shape), the same "
                       "kernels as gpt2_decode")
        c, layers, vocab = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"]
        b, length = GPT2_BATCH, GPT2_PROMPT + 1
        # One token per sequence through every layer and the LM head, attending over P + 1 keys.
        flops = 2.0 * b * (layers * 12 * c * c + vocab * c) + 4.0 * b * layers * length * c
        work = Work(f"GPT-2 124M random weights, batch={b} prompt={GPT2_PROMPT}, one decode step ({decode} path) "
                    "of generate(max_new_tokens=2)", flops=flops,
                    bytes=decode_bytes(cfg, torch.float16, b, GPT2_PROMPT, 2),
                    flops_kind="fp32", subtract="gpt2_prefill")
        return (lambda: engine.generate(ids, max_new_tokens=2)), work
    return setup


def _registry() -> dict[str, Family]:
    from flashkernel.ops.gelu_linear import BACKENDS as GELU_BACKENDS

    fams = [Family("vector_add", vector_add), Family("reduce_full", reduce_full), Family("reduce_rows", reduce_rows)]
    for backend in ("sm80", "sm90"):
        for d in (64, 128):
            for causal in (False, True):
                name = f"attention_{backend}_d{d}" + ("_causal" if causal else "")
                fams.append(Family(name, attention(backend, d, causal), hopper_only=backend == "sm90"))
    # Every Hopper variant the API exposes, the portable kernels on the same shape (GPT-2's MLP up
    # projection at 8192 tokens), and the small-M kernel that streams the weights (M <= 64).
    for backend in [b for b in GELU_BACKENDS if b.startswith("sm90")] + ["sm80"]:
        fams.append(Family(f"gelu_linear_{backend}", gelu_linear(backend, 8192, 768, 3072),
                           hopper_only=backend.startswith("sm90")))
    fams.append(Family("gelu_linear_small_m", gelu_linear("auto", 16, 4096, 16384)))
    fams += [Family("rope", rope), Family("rope_fused", rope_fused), Family("add_layernorm", add_layernorm),
             Family("add_rms_norm", add_rms_norm), Family("kv_cache_append", kv_cache_append),
             Family("kv_cache_gather", kv_cache_gather), Family("paged_decode", paged_decode),
             Family("gpt2_prefill", gpt2_prefill),
             Family("gpt2_decode", _gpt2_decode("graph"), needs=("gpt2_prefill",)),
             Family("gpt2_decode_fused", _gpt2_decode("fused"), needs=("gpt2_prefill",)),
             Family("gpt2_decode_persistent", _gpt2_decode("persistent"), needs=("gpt2_prefill",))]
    return {f.name: f for f in fams}


def select(registry: dict[str, Family], only: str | None, with_needs: bool) -> list[str]:
    """The families named in `only` (comma-separated; None: all), in registry order, plus those
    they need when with_needs. Raises ValueError naming an unknown family."""
    if not only:
        return list(registry)
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(wanted - set(registry))
    if unknown:
        raise ValueError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                         f"known: {', '.join(registry)}")
    if with_needs:
        wanted |= {need for name in wanted for need in registry[name].needs}
    return [name for name in registry if name in wanted]


# ---------------------------------------------------------------------------------------- running
def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def run_family(fam: Family) -> dict:
    """Warm-up call, then the ranged call. Returns the family's work record (with "skipped" set
    when it could not run)."""
    started = time.time()
    record: dict = {"skipped": None}
    try:
        major, minor = torch.cuda.get_device_capability()
        if fam.hopper_only and major != 9:
            raise Skip(f"needs a Hopper GPU (compute capability 9.x); this one is {major}.{minor}")
        fn, work = fam.setup()
        record.update(asdict(work))
        fn()  # warm-up, un-ranged: JIT, autotuning, graph capture, first-call allocations
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push(RANGE_ROOT)
        torch.cuda.nvtx.range_push(fam.name)
        try:
            fn()
            torch.cuda.synchronize()  # errors of this family's kernels surface here, not in the next
        finally:
            torch.cuda.nvtx.range_pop()
            torch.cuda.nvtx.range_pop()
        del fn
    except Skip as e:
        record["skipped"] = str(e)
    except Exception as e:  # noqa: BLE001 - one family that cannot run must not end the others
        record["skipped"] = _first_line(e)
    torch.cuda.empty_cache()  # less device memory for Nsight Compute to save and restore per replay
    record["seconds"] = round(time.time() - started, 2)
    return record


def _environment() -> dict:
    import flashkernel

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    env = {"gpu": props.name, "capability": f"{props.major}.{props.minor}", "sm_count": props.multi_processor_count,
           "torch": torch.__version__, "flashkernel": flashkernel.__version__}
    try:  # the HBM peak from the memory clock and bus width (a datasheet-equivalent ceiling)
        env["hbm_gbps_theoretical"] = round(flashkernel.device_info().peak_memory_bandwidth_gbps, 1)
    except Exception:  # noqa: BLE001 - informative only
        pass
    from flashkernel.bench.harness import CommitUnknownError, git_commit
    try:  # the code profiled, named as the benchmark rows name it
        env["commit"] = git_commit()
    except CommitUnknownError as e:
        print(f"profile_targets: {e}", file=sys.stderr)
    return env


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)  # never a half-written file, even if the run is killed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true",
                    help="print the selected family names, one a line, with the families they need; run nothing")
    ap.add_argument("--only", help="comma-separated family names (default: all)")
    ap.add_argument("--work-json", type=Path, help="where to write each family's work and skip reason")
    args = ap.parse_args(argv)
    try:
        import flashkernel  # noqa: F401 - loads the op library (torch.ops.flashkernel)
        registry = _registry()
        names = select(registry, args.only, with_needs=args.list)
    except (ImportError, ValueError) as e:
        print(f"profile_targets: {e}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(names))
        return 0
    if not torch.cuda.is_available():
        print("profile_targets: no CUDA GPU visible; the families need one (--list works without)", file=sys.stderr)
        return 2
    out = {**_environment(), "families": {}}
    for name in names:
        record = run_family(registry[name])
        out["families"][name] = record
        status = f"skipped: {record['skipped']}" if record["skipped"] else "done"
        print(f"[fk] {name:<28} {status} ({record['seconds']} s)", flush=True)
        if args.work_json:
            _write_json(args.work_json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
