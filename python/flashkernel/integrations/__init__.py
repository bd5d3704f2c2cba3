"""Patch third-party models so their own code paths run on FlashKernel's kernels."""
from flashkernel.integrations.gpt2 import patch_gpt2, unpatch_gpt2

__all__ = ["patch_gpt2", "unpatch_gpt2"]
