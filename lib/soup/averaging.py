"""Averaging weights: the running mean of checkpoints (model soups) and the interpolation of two (WiSE-FT).

Key by key, float32 on CPU, memory-mapped (integer buffers: the first's); where the inputs agree the
result is that value exactly, so a soup that changes nothing changes nothing (docs/soups.md)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lib.errors import KitError
from lib.files import recorded_sha256, sha256_file
from lib.model.checkpoints import load_checkpoint

State = dict[str, torch.Tensor]


class AveragingError(KitError, ValueError):
    """Weights that cannot be averaged: another model, other keys, other shapes, an alpha out of [0, 1]."""


@dataclass(frozen=True)
class Ingredient:
    """One checkpoint that went into an average, as soup.json names it."""

    path: Path
    sha256: str
    epoch: int | None

    from_run: str = ""  # set in a soup across runs: the run the checkpoint came from

    @property
    def name(self) -> str:
        """epoch_N.pt, or <run>/epoch_N.pt in a soup across runs."""
        return f"{self.from_run}/{self.path.name}" if self.from_run else self.path.name

    def record(self) -> dict[str, Any]:
        return {"file": self.path.name, **({"run": self.from_run} if self.from_run else {}),
                "sha256": self.sha256, "epoch": self.epoch}


def read_weights(path: str | os.PathLike, model: str, home: Path | None = None) -> tuple[State, Ingredient]:
    """A checkpoint's state dict, memory-mapped and verified, refused for another architecture than
    `model`; named with its run when that is not `home` (a soup across runs)."""
    path = Path(path)
    ckpt = load_checkpoint(path, mmap=True)
    name = ckpt.get("name")
    if name is not None and name != model:
        raise AveragingError(f"{path} holds a {name} model, not model={model}: not this run's weights")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise AveragingError(f"{path} holds no state_dict: not a checkpoint of this kit")
    epoch = ckpt.get("epoch")
    run = path.parent.parent
    from_run = run.name if home is not None and run.resolve() != Path(home).resolve() else ""
    return ckpt["state_dict"], Ingredient(path, recorded_sha256(path) or sha256_file(path),
                                          int(epoch) if epoch is not None else None, from_run)


def check_compatible(reference: State, other: State, where: str) -> None:
    """Same keys, same shapes, floats where floats: else the first key that differs is named."""
    unlike = "not the same model as the weights it is averaged with"
    for key in reference:
        if key not in other:
            raise AveragingError(f"{where} lacks key {key!r}: {unlike}")
    for key in other:
        if key not in reference:
            raise AveragingError(f"{where} has an extra key {key!r}: {unlike}")
    for key, ref in reference.items():
        mine = other[key]
        if mine.shape != ref.shape or mine.is_floating_point() != ref.is_floating_point():
            raise AveragingError(f"{where}: {key!r} is {mine.dtype} {tuple(mine.shape)}, not "
                                 f"{ref.dtype} {tuple(ref.shape)}: {unlike}")


def float32(state: State) -> State:
    """Float tensors as float32 on CPU (the same tensor where it already is one); the rest as they are."""
    return {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v for k, v in state.items()}


def dtypes(state: State) -> dict[str, torch.dtype]:
    return {k: v.dtype for k, v in state.items()}


def restore_dtypes(state: State, types: dict[str, torch.dtype]) -> State:
    """Float tensors back in the ingredients' own dtype (a no-op for float32 checkpoints)."""
    return {k: v.to(types[k]) if v.is_floating_point() else v for k, v in state.items()}


def add_to_mean(mean: State, count: int, state: State, *, inplace: bool = False) -> State:
    """The float32 mean of `count` state dicts, updated with the next one (m itself where x equals it).
    `inplace` replaces mean's tensors one by one (one copy in memory); otherwise `mean` is left as is."""
    out = mean if inplace else dict(mean)
    for key in list(out):
        m = out[key]
        if m.is_floating_point():
            x = state[key].detach().to("cpu", torch.float32)
            out[key] = torch.where(x == m, m, m + (x - m) / (count + 1))
    return out


def mean_of(paths: Sequence[str | os.PathLike], model: str,
            home: Path | None = None) -> tuple[State, list[Ingredient]]:
    """The uniform mean of checkpoints, read one at a time, in the first one's dtypes."""
    if not paths:
        raise AveragingError("no checkpoints to average")
    mean: State = {}
    types: dict[str, torch.dtype] = {}
    ingredients = []
    for count, path in enumerate(paths):
        state, ingredient = read_weights(path, model, home)
        if count == 0:
            mean, types = float32(state), dtypes(state)
        else:
            check_compatible(mean, state, str(path))
            mean = add_to_mean(mean, count, state, inplace=True)
        ingredients.append(ingredient)
    return restore_dtypes(mean, types), ingredients


def interpolate(start: State, end: State, alpha: float) -> State:
    """(1 - alpha) * start + alpha * end, float32, in start's dtypes: alpha 0 is `start` and 1 is `end`
    exactly; where both agree, that value; tensors that are not floats are start's."""
    if not 0 <= alpha <= 1:
        raise AveragingError(f"alpha={alpha} is out of [0, 1] (0: the foundation weights, 1: the fine-tuned)")
    check_compatible(start, end, "the fine-tuned weights")
    out = {}
    for key, value in start.items():
        if not value.is_floating_point():
            out[key] = value
            continue
        a, b = value.detach().to("cpu", torch.float32), end[key].detach().to("cpu", torch.float32)
        if alpha == 0:
            mixed = a
        elif alpha == 1:
            mixed = b
        else:
            mixed = torch.where(a == b, a, (1 - alpha) * a + alpha * b)
        out[key] = mixed.to(value.dtype)
    return out
