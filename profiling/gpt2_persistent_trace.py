"""Where a persistent GPT-2 decode step spends its time (FLASHKERNEL_GPT2_DECODE=persistent).

Runs one greedy generate of a random-weight GPT-2 124M with FLASHKERNEL_GPT2_PERSISTENT_TRACE set,
then summarizes the last step's global-timer stamps of CTA 0 (src/models/gpt2/persistent_decode.cu):
per stage S1..S5, the median over layers of CTA 0's own work (previous barrier passed -> this
barrier reached) and of its wait at the barrier (reached -> passed, i.e. the slowest CTA plus the
barrier's latency); the kernel's span against the measured step time, whose difference is the
work outside the kernel (embedding, LM head, token selection, launch).

    PYTHONPATH=python FLASHKERNEL_LIB_DIR=build/python/flashkernel \\
        python profiling/gpt2_persistent_trace.py [--batch 1] [--prompt 32] [--gen 64]
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile


def summarize(path: str) -> str:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    step_ns = float(next(r["ns"] for r in rows if r["event"] == "measured_step"))
    events = [r for r in rows if r["event"] != "measured_step"]
    work: dict[int, list[float]] = {s: [] for s in range(1, 6)}
    wait: dict[int, list[float]] = {s: [] for s in range(1, 6)}
    previous_pass = 0.0
    for r in events:
        ns, stage = float(r["ns"]), int(r["stage"])
        if r["event"] == "reach_barrier":
            work[stage].append(ns - previous_pass)
            reached = ns
        elif r["event"] == "pass_barrier":
            wait[stage].append(ns - reached)
            previous_pass = ns
    span = float(events[-1]["ns"])
    lines = [f"measured step {step_ns / 1e3:.1f} us; kernel span (entry -> ln_f done) {span / 1e3:.1f} us; "
             f"outside the kernel {max(0.0, step_ns - span) / 1e3:.1f} us",
             "stage  CTA-0 work us (median over layers)  barrier wait us (median)"]
    for s in range(1, 6):
        lines.append(f"S{s}     {statistics.median(work[s]) / 1e3:8.2f}                        "
                     f"{statistics.median(wait[s]) / 1e3:8.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--gen", type=int, default=64)
    args = ap.parse_args()
    path = os.path.join(tempfile.mkdtemp(), "trace.csv")
    os.environ["FLASHKERNEL_GPT2_DECODE"] = "persistent"
    os.environ["FLASHKERNEL_GPT2_PERSISTENT_TRACE"] = path

    import torch
    import transformers

    from flashkernel.models import GPT2Engine

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval().to("cuda", torch.float16)
    engine = GPT2Engine.from_hf(hf)
    rows = [list(range(1, args.prompt + 1))] * args.batch
    engine.generate(rows, args.gen)  # capture + warm-up
    engine.generate(rows, args.gen)
    assert engine.last_stats.persistent_decode, "the persistent step did not run (see GenerationStats)"
    print(f"batch {args.batch} prompt {args.prompt} gen {args.gen} on {torch.cuda.get_device_name()}")
    print(summarize(path))


if __name__ == "__main__":
    main()
