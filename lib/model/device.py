"""Which device and numeric precision a model runs with, decided in one place (fp16 also needs a
loss scaler, lib.train.optim)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from lib.errors import KitError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(KitError, RuntimeError):
    """A device or precision this machine cannot give."""


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """auto: this process's GPU when CUDA is available, else the CPU; `cuda` is `cuda:<local_rank>`."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={name!r} but CUDA is not available here: use device=cpu or device=auto")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 autocast on a GPU, fp32 on the CPU; explicit choices are kept (fp16 on CPU refused)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", *AUTOCAST_DTYPES):
        raise DeviceError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError("precision=fp16 needs a GPU (use fp32 or bf16 on the CPU)")
    return precision


def autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for a resolved precision: AMP for bf16/fp16, none for fp32."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def use_threads(threads: int) -> None:
    """torch's intra-op threads (0: torch's default, one per core); on a shared CPU fewer can be faster
    (docs/benchmarks.md: threads)."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def allow_tf32(device: torch.device) -> None:
    """TF32 matmuls on Ampere+ GPUs: open_clip's trainer default, ~free speed for the fp32 parts."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
