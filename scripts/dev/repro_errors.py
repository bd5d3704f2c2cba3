"""Exercises the error paths of the torch op one by one (used to debug argument checks)."""
import faulthandler
import sys

import torch

import flashkernel

faulthandler.enable()
a = torch.randn(8, device="cuda")
cases = {
    "cpu b": lambda: flashkernel.vector_add(a, torch.ones(8)),
    "shape": lambda: flashkernel.vector_add(a, torch.randn(9, device="cuda")),
    "dtype": lambda: flashkernel.vector_add(a, a.half()),
    "double": lambda: flashkernel.vector_add(a.double(), a.double()),
}
for name, fn in cases.items():
    print("case", name, flush=True)
    try:
        fn()
        print("  no error!", flush=True)
    except Exception as e:  # noqa: BLE001
        print("  ", type(e).__name__, str(e).splitlines()[0], flush=True)
sys.exit(0)
