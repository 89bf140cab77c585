"""What the GPU proof's parts share: a time budget, peak memory, freeing memory between settings,
and a failure written as one line for the report.

Memory is torch.cuda.max_memory_allocated in decimal GB (docs/gpu.md's plan counts them so): what
tensors held at the peak, not what the caching allocator reserved. Off CUDA it cannot be measured
and is None (null in the JSON).
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch

GB = 1e9


class Budget:
    """The seconds a part may take, counted from its creation."""

    def __init__(self, seconds: float):
        self.seconds, self.start = float(seconds), time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def over(self) -> bool:
        return self.left() <= 0


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it means what it says."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    """The most memory tensors held since the last reset_peak, in GB; None off CUDA."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / GB, 2)


def free(device: torch.device, model: torch.nn.Module | None = None) -> None:
    """Drop the model's gradients and every unreferenced tensor, and give cached blocks back, so that
    the next setting's peak is its own."""
    if model is not None:
        model.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def failure(error: BaseException) -> str:
    """One line for the report: the exception's type and the first line of its message."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".strip()
    return ("out of memory: " if is_out_of_memory(error) else "") + text[:400]


def fit_count(wanted: int, rate: float, seconds: float) -> int:
    """How many of `wanted` items fit in `seconds` at `rate` items/s (at least 1)."""
    if rate <= 0 or seconds <= 0:
        return min(wanted, 1)
    return max(1, min(wanted, int(rate * seconds)))


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """(fn's result, its seconds), the GPU's work included."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start
