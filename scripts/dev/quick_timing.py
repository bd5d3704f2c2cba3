"""The timer of the scripts/dev quick-iteration scripts: the median of CUDA-event timings of one
call after a few warm-up calls (no L2 rotation: for comparing variants of one kernel in one
process, not for the committed numbers, which come from `flashkernel bench`)."""
import torch


def median_ms(fn, reps=30, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]
