"""GPT2Engine: GPT-2 inference on FlashKernel's C++ engine (torch.classes.flashkernel.GPT2Engine).

    engine = GPT2Engine.from_hf(hf_model)                 # same weights as a GPT2LMHeadModel
    engine = GPT2Engine.from_pretrained("path/to/dir")    # config.json + model.safetensors
    engine = GPT2Engine.random(seed=0)                    # GPT-2 124M shapes, HF's init, seeded
    out = engine.generate(input_ids, max_new_tokens=128)  # greedy, like HF generate

    seq = engine.open_sequence()                          # multi-turn: K/V kept between calls
    out1 = engine.generate([turn1], 32, sequences=[seq])  # prompt turn1
    out2 = engine.generate([turn2], 32, sequences=[seq])  # continues after turn1 + out1's tokens
    engine.close_sequence(seq)

Prefill runs all prompts' tokens in one pass; each decode step is one CUDA-graph replay (captured
once per batch shape) that ends with the next-token choice on the GPU.

Threads: an engine may be shared between threads. Its C++ methods run without the GIL and hold a
per-engine lock, so concurrent calls on one engine run one after another (a second `generate`
waits for the first); separate engines run concurrently. After an error, out of memory included,
the engine stays usable.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from flashkernel import _library

_OP = "flashkernel.GPT2Engine"
# GPT-2 124M (HF GPT2Config defaults).
DEFAULT_CONFIG = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                      layer_norm_epsilon=1e-5)


# GPT2Engine.decode_path's values (the C++ engine's DecodePath).
DECODE_PATHS = ("auto", "graph", "pdl", "fused", "persistent")


@dataclass
class GenerationStats:
    prefill_ms: float
    decode_ms: float
    decode_steps: int
    graph_captures: int
    new_tokens: int
    persistent_decode: bool = False  # decode steps on the persistent kernel (else the graph path)
    fused_decode: bool = False  # the graph path with the fused 5-kernel layers (docs/ops/gpt2.md)

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens (all sequences) per second of prefill + decode."""
        total = (self.prefill_ms + self.decode_ms) / 1e3
        return self.new_tokens / total if total > 0 else float("inf")


def _dtype_name(dtype: torch.dtype) -> str:
    if dtype == torch.float16:
        return "float16"
    if dtype == torch.bfloat16:
        return "bfloat16"
    raise TypeError(f"{_OP}: argument 'dtype' must be torch.float16 or torch.bfloat16, got {dtype}")


def _kv_dtype_name(kv_dtype: torch.dtype | None, dtype: torch.dtype) -> str:
    """The engine's name for a KV cache dtype: None (the engine's dtype) or torch.float8_e4m3fn."""
    if kv_dtype is None or kv_dtype == dtype:
        return _dtype_name(dtype)
    if kv_dtype == torch.float8_e4m3fn:
        return "float8_e4m3fn"
    raise TypeError(f"{_OP}: argument 'kv_dtype' must be None, the engine's dtype ({dtype}) or "
                    f"torch.float8_e4m3fn, got {kv_dtype}")


def _device_index(device) -> int:
    device = torch.device(device if device is not None else "cuda")
    if device.type != "cuda":
        raise ValueError(f"{_OP}: argument 'device' must be a CUDA device, got {device}")
    return device.index if device.index is not None else torch.cuda.current_device()


class GPT2Engine:
    """A GPT-2 model held by FlashKernel's C++ engine. Build with from_hf / from_pretrained / random.

    kv_dtype (every constructor): None keeps the KV cache in the engine's dtype; torch.float8_e4m3fn
    makes it an FP8 cache (K/V stored as e4m3 with scale 1.0 per layer and head: half the cache's
    bytes and half the bytes decode attention reads; docs/ops/gpt2.md says why a fixed scale)."""

    def __init__(self, cpp, device_index: int, dtype: torch.dtype, config: dict, kv_dtype: torch.dtype | None = None):
        self._cpp = cpp
        self.device = torch.device("cuda", device_index)
        self.dtype = dtype
        self.config = dict(config)
        self.last_stats: GenerationStats | None = None
        self.kv_dtype = dtype if kv_dtype is None else kv_dtype
        if self.kv_dtype != dtype:  # the C++ engine's cache starts in its own dtype
            self._cpp.set_kv_dtype(_kv_dtype_name(kv_dtype, dtype))

    # ------------------------------------------------------------------ construction
    @classmethod
    def _new(cls, config: dict, dtype: torch.dtype, device, kv_dtype=None) -> "GPT2Engine":
        _kv_dtype_name(kv_dtype, dtype)  # a bad kv_dtype is refused before the engine is built
        _library.load()
        idx = _device_index(device)
        c = {**DEFAULT_CONFIG, **{k: config[k] for k in DEFAULT_CONFIG if k in config and config[k] is not None}}
        cpp = torch.classes.flashkernel.GPT2Engine(int(c["vocab_size"]), int(c["n_positions"]), int(c["n_embd"]),
                                                   int(c["n_layer"]), int(c["n_head"]),
                                                   float(c["layer_norm_epsilon"]), _dtype_name(dtype), idx)
        return cls(cpp, idx, dtype, c, kv_dtype)

    @classmethod
    def random(cls, seed: int = 0, *, dtype: torch.dtype = torch.float16, device=None,
               config: dict | None = None, kv_dtype: torch.dtype | None = None) -> "GPT2Engine":
        """GPT-2 124M (or `config`'s shapes) with HF's initialization, generated on the GPU from `seed`."""
        engine = cls._new(config or {}, dtype, device, kv_dtype)
        engine._cpp.init_random(int(seed))
        return engine

    @classmethod
    def from_hf(cls, model, *, dtype: torch.dtype | None = None, device=None,
                kv_dtype: torch.dtype | None = None) -> "GPT2Engine":
        """The weights of a transformers GPT2LMHeadModel (any device / dtype); dtype defaults to the
        model's if it is float16/bfloat16, else float16."""
        cfg = model.config
        if getattr(cfg, "model_type", "gpt2") != "gpt2":
            raise ValueError(f"{_OP}.from_hf: argument 'model' must be a GPT-2 model, got model_type "
                             f"{cfg.model_type!r}")
        act = getattr(cfg, "activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"{_OP}.from_hf: argument 'model' uses activation {act!r}; the engine implements "
                             "GPT-2's tanh GeLU ('gelu_new')")
        if getattr(cfg, "n_inner", None) not in (None, 4 * cfg.n_embd):
            raise ValueError(f"{_OP}.from_hf: argument 'model' has n_inner={cfg.n_inner}; the engine needs 4 * n_embd")
        # The C++ config reader that from_pretrained uses rejects every option the engine does not
        # compute (untied head, unscaled or layer-scaled attention, cross-attention, values past its
        # limits) with a ValueError naming the field; HF would run them and give other logits.
        _library.load()
        torch.ops.flashkernel.gpt2_parse_config(cfg.to_json_string(use_diff=False))
        head, wte = model.get_output_embeddings(), model.get_input_embeddings()
        if head is not None and head.weight is not wte.weight and not torch.equal(head.weight, wte.weight):
            raise ValueError(f"{_OP}.from_hf: argument 'model' has an lm_head that differs from the token embedding "
                             "(wte); the engine ties the LM head to wte")
        if dtype is None:
            pdt = next(model.parameters()).dtype
            dtype = pdt if pdt in (torch.float16, torch.bfloat16) else torch.float16
        if device is None:
            pdev = next(model.parameters()).device
            device = pdev if pdev.type == "cuda" else "cuda"
        config = {k: getattr(cfg, k) for k in DEFAULT_CONFIG}
        engine = cls._new(config, dtype, device, kv_dtype)
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if t.dtype in (torch.float32, torch.float16, torch.bfloat16):
                    engine._cpp.load_tensor(name, t.detach())
        engine._cpp.check_loaded()
        return engine

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, dtype: torch.dtype = torch.float16,
                        device=None, kv_dtype: torch.dtype | None = None) -> "GPT2Engine":
        """A local checkpoint directory (config.json + model.safetensors), parsed and loaded in C++."""
        _kv_dtype_name(kv_dtype, dtype)
        path = Path(path)
        for need in ("config.json", "model.safetensors"):
            if not (path / need).is_file():
                raise ValueError(f"{_OP}.from_pretrained: argument 'path' must be a directory holding {need}; "
                                 f"{path / need} does not exist")
        _library.load()
        idx = _device_index(device)
        cpp = torch.classes.flashkernel.GPT2Engine.from_pretrained(str(path), _dtype_name(dtype), idx)
        vocab, npos, embd, nlayer, nhead, eps = torch.ops.flashkernel.gpt2_parse_config(
            (path / "config.json").read_text())
        config = dict(vocab_size=vocab, n_positions=npos, n_embd=embd, n_layer=nlayer, n_head=nhead,
                      layer_norm_epsilon=eps)
        return cls(cpp, idx, dtype, config, kv_dtype)

    # ------------------------------------------------------------------ decode path
    @property
    def decode_path(self) -> str:
        """How decode steps run (docs/ops/gpt2.md): "auto" (the default: the fused layers at batch 1-2
        on a 9.x GPU, else the kernel chain with programmatic dependent launches), "graph" (the
        chain, ordinary launches), "pdl", "fused" or "persistent". Starts as the environment
        variable FLASHKERNEL_GPT2_DECODE names it when the engine is built; setting it drops the
        captured decode graphs. last_stats.fused_decode / persistent_decode say what ran."""
        return self._cpp.decode_path()

    @decode_path.setter
    def decode_path(self, path: str) -> None:
        if path not in DECODE_PATHS:
            raise ValueError(f"{_OP}: argument 'decode_path' must be one of {', '.join(DECODE_PATHS)}, got {path!r}")
        self._cpp.set_decode_path(path)

    # ------------------------------------------------------------------ inference
    @staticmethod
    def _prompts(input_ids, allow_empty: bool = False) -> tuple[list[list[int]], bool]:
        """input_ids: LongTensor [B, L] / [L] or a list of token-id lists (lengths may differ).
        allow_empty: rows may be empty (continuations of open sequences)."""
        if isinstance(input_ids, torch.Tensor):
            if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise TypeError(f"{_OP}: argument 'input_ids' must be an integer tensor, got {input_ids.dtype}")
            if input_ids.dim() == 1:
                input_ids = input_ids[None]
            if input_ids.dim() != 2:
                raise ValueError(f"{_OP}: argument 'input_ids' must be [batch, seq] or [seq], got shape "
                                 f"{tuple(input_ids.shape)}")
            if input_ids.shape[0] == 0:
                raise ValueError(f"{_OP}: argument 'input_ids' must hold at least one sequence")
            if input_ids.shape[1] == 0 and not allow_empty:
                raise ValueError(f"{_OP}: argument 'input_ids' is an empty prompt (a prompt needs at least one token)")
            return input_ids.cpu().tolist(), True
        if not isinstance(input_ids, (list, tuple)) or not input_ids:
            raise TypeError(f"{_OP}: argument 'input_ids' must be a tensor or a non-empty list of token-id lists")
        rows = input_ids if isinstance(input_ids[0], (list, tuple)) else [input_ids]
        out = []
        for r in rows:
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in r):
                raise TypeError(f"{_OP}: argument 'input_ids' must hold Python ints")
            out.append([int(t) for t in r])
        return out, False

    def logits(self, input_ids) -> torch.Tensor:
        """Teacher-forced logits (float32): [B, L, vocab] for a tensor, [sum of lengths, vocab] for lists."""
        prompts, is_tensor = self._prompts(input_ids)
        out = self._cpp.forward_logits(prompts, self.device.index)
        if is_tensor:
            out = out.view(len(prompts), len(prompts[0]), -1)
        return out

    def _generation_args(self, max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id,
                         seed, prefill_chunk=None) -> tuple:
        """generate()'s options checked and converted to the C++ methods' positional arguments."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise TypeError(f"{_OP}: argument 'max_new_tokens' must be an int, got {type(max_new_tokens).__name__}")
        if max_new_tokens < 1:
            raise ValueError(f"{_OP}: argument 'max_new_tokens' must be >= 1, got {max_new_tokens}")
        # Checked here too so that values beyond int64 get this message, not a conversion error.
        if max_new_tokens > self.config["n_positions"]:
            raise ValueError(f"{_OP}: argument 'max_new_tokens' is {max_new_tokens}, more than n_positions = "
                             f"{self.config['n_positions']}")
        if do_sample:
            if not temperature > 0:
                raise ValueError(f"{_OP}: argument 'temperature' must be > 0, got {temperature}")
            if top_k is not None and top_k < 0:
                raise ValueError(f"{_OP}: argument 'top_k' must be >= 0, got {top_k}")
            if top_p is not None and not 0 < top_p <= 1:
                raise ValueError(f"{_OP}: argument 'top_p' must be in (0, 1], got {top_p}")
        if prefill_chunk is not None and (isinstance(prefill_chunk, bool) or not isinstance(prefill_chunk, int)
                                          or prefill_chunk < 1):
            raise ValueError(f"{_OP}: argument 'prefill_chunk' must be None (whole prompts) or an int >= 1, "
                             f"got {prefill_chunk!r}")
        if seed is None:
            seed = int.from_bytes(os.urandom(7), "little")
        return (int(max_new_tokens), bool(do_sample), float(temperature), int(top_k or 0),
                float(1.0 if top_p is None else top_p), -1 if eos_token_id is None else int(eos_token_id),
                int(seed) & ((1 << 63) - 1), int(min(prefill_chunk or 0, self.config["n_positions"])))

    def generate(self, input_ids, max_new_tokens: int = 32, *, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, eos_token_id: int | None = None,
                 seed: int | None = None, prefill_chunk: int | None = None, sequences=None):
        """Greedy (default) or sampled continuation of each prompt.

        Returns, like HF generate, prompt + new tokens: a LongTensor [B, L + max_new_tokens] for a
        tensor input, a list of lists for list input (prompts may differ in length). After EOS a
        sequence is padded with eos_token_id. Sampling: temperature, then top-k, then top-p; seed
        makes it reproducible (None: a fresh random seed). prefill_chunk: prefill prompts in pieces
        of at most this many tokens (activation memory bounded by the chunk; same tokens).

        sequences (multi-turn): ids from open_sequence(), one per row. Row b of input_ids is then
        appended to sequence b's history (it may be empty once the sequence has one) and generation
        continues after it; only the tokens not yet in the KV cache are prefilled. The history
        grows by the row and the new tokens (through the first EOS when generation stopped there).
        The result equals generate() on history + row, up to rounding; it returns row + new tokens."""
        prompts, is_tensor = self._prompts(input_ids, allow_empty=sequences is not None)
        args = self._generation_args(max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, seed,
                                     prefill_chunk)
        if sequences is None:
            tokens, (pre_ms, dec_ms, steps, captures, kernel) = self._cpp.generate(prompts, *args)
        else:
            ids = self._sequence_ids(sequences)
            if len(ids) != len(prompts):
                raise ValueError(f"{_OP}: argument 'sequences' has {len(ids)} ids but input_ids has {len(prompts)} rows")
            tokens, (pre_ms, dec_ms, steps, captures, kernel) = self._cpp.generate_continue(ids, prompts, *args)
        self.last_stats = GenerationStats(pre_ms, dec_ms, steps, captures, len(prompts) * max_new_tokens,
                                          persistent_decode=kernel == 1, fused_decode=kernel == 2)
        if is_tensor:
            return torch.cat([torch.tensor(prompts, dtype=torch.long), tokens], dim=1)
        return [p + t for p, t in zip(prompts, tokens.tolist())]

    def generate_stream(self, input_ids, max_new_tokens: int = 32, *, do_sample: bool = False,
                        temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                        eos_token_id: int | None = None, seed: int | None = None):
        """generate() as a generator: yields, as each step finishes, the new tokens of that step as a
        LongTensor [B] (one per prompt), max_new_tokens times; stacked they equal generate()'s new
        tokens for the same arguments. Each step costs a device-to-host copy and a synchronization,
        so it is slower than generate(); last_stats is not updated. One stream per engine at a time;
        closing the generator early (break) stops the generation at its next step."""
        prompts, _ = self._prompts(input_ids)
        args = self._generation_args(max_new_tokens, do_sample, temperature, top_k, top_p, eos_token_id, seed)
        stream_id = self._cpp.generate_stream_start(prompts, *args)
        try:
            while True:
                step = self._cpp.generate_stream_next(stream_id)
                if step.numel() == 0:
                    return
                yield step
        finally:
            # No-op once read to the end; after a break or an error it ends the worker and frees the
            # engine for the next call.
            self._cpp.generate_stream_stop(stream_id)

    # ------------------------------------------------------------------ multi-turn
    @staticmethod
    def _sequence_ids(sequences) -> list[int]:
        if isinstance(sequences, int) and not isinstance(sequences, bool):
            sequences = [sequences]
        if not isinstance(sequences, (list, tuple)) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in sequences):
            raise TypeError(f"{_OP}: argument 'sequences' must be a list of ids from open_sequence()")
        return [int(s) for s in sequences]

    def open_sequence(self) -> int:
        """A new, empty sequence whose K/V stay in the engine's cache between generate(..., sequences=)
        calls, until close_sequence(). Returns its id."""
        return self._cpp.open_sequence()

    @contextlib.contextmanager
    def sequence(self):
        """open_sequence() for a `with` block: yields the id and closes the sequence after the block,
        also when it raises."""
        seq = self.open_sequence()
        try:
            yield seq
        finally:
            self.close_sequence(seq)

    def close_sequence(self, sequence: int) -> None:
        """Frees the sequence's KV pages (ValueError naming 'sequence' if it is not open)."""
        self._cpp.close_sequence(int(sequence))

    def sequence_length(self, sequence: int) -> int:
        """Tokens in the sequence's history (every token given to and generated on it)."""
        return self._cpp.sequence_length(int(sequence))

    def open_sequences(self) -> list[int]:
        return list(self._cpp.open_sequences())

    def weight_bytes(self) -> int:
        return self._cpp.weight_bytes()

    def device_bytes(self) -> int:
        """Weights + KV pool + workspaces the engine holds now."""
        return self._cpp.device_bytes()


def stream_text(steps, prompt_ids: list[int], tokenizer=None):
    """Printable pieces of one sequence (row 0) as generate_stream() produces it: with a tokenizer,
    the text each new token adds, else " <id>" per token. The whole sequence is decoded again at each
    step and only the new suffix is yielded, because GPT-2's byte-level tokens can split one UTF-8
    character; while the text ends in such a partial character nothing is yielded."""
    new: list[int] = []
    shown = tokenizer.decode(prompt_ids) if tokenizer is not None else ""
    for step in steps:
        new.append(int(step[0]))
        if tokenizer is None:
            yield f" {new[-1]}"
            continue
        text = tokenizer.decode(prompt_ids + new)
        if text.endswith("\ufffd"):
            continue
        # Text already printed cannot be taken back: if decoding re-spaced it, that is not shown.
        piece, shown = text[len(shown):], text
        if piece:
            yield piece


def read_config(path: str | os.PathLike) -> dict:
    """config.json parsed by the engine's C++ reader (the fields it uses)."""
    vocab, npos, embd, nlayer, nhead, eps = torch.ops.flashkernel.gpt2_parse_config(Path(path).read_text())
    return dict(vocab_size=vocab, n_positions=npos, n_embd=embd, n_layer=nlayer, n_head=nhead,
                layer_norm_epsilon=eps)


def safetensors_index(path: str | os.PathLike) -> dict:
    """{name: (dtype, shape)} of a safetensors file, read by the engine's C++ reader."""
    names, dtypes, ranks, dims = torch.ops.flashkernel.gpt2_safetensors_index(str(path))
    out, at = {}, 0
    for n, d, r in zip(names, dtypes, ranks):
        out[n] = (d, tuple(dims[at:at + r]))
        at += r
    return out


