"""Whole-model engines built on FlashKernel's kernels."""
from flashkernel.models.gpt2 import GPT2Engine, GenerationStats, stream_text

__all__ = ["GPT2Engine", "GenerationStats", "stream_text"]
