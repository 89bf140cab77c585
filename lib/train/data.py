"""Training pairs: the prepared table -> (image tensor, tokens) batches, deterministic and resumable.

An epoch's order is a permutation of (seed, epoch), sharded like DistributedSampler, and a sample's
augmentation is seeded from (seed, epoch, index): a resume is exact without replaying the loader, and
workers do not matter. A bad image is skipped and reported, up to `max_bad_image_fraction`.
"""
from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lib.data.images import WORKER_TIMEOUT_S, BadImage, ImageError, TooManyBadImages, read_image
from lib.paths import resolve


def read_table(table: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """The prepared CSV (or a DataFrame) with absolute image paths; refuses missing columns/rows."""
    name = "table" if isinstance(table, pd.DataFrame) else str(table)
    df = table.copy() if isinstance(table, pd.DataFrame) else pd.read_csv(table, keep_default_na=False)
    missing = [c for c in ("filepath", "title") if c not in df.columns]
    if missing:
        has = ", ".join(map(str, df.columns))
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)} (has {has})")
    if df.empty:
        raise ValueError(f"{name}: no rows")
    empty = df["filepath"].astype(str).str.strip() == ""
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise ValueError(f"{name}: row {row + 2} (file line) has an empty filepath")
    df["filepath"] = [str(resolve(p)) for p in df["filepath"].astype(str)]
    df["title"] = df["title"].astype(str)
    return df.reset_index(drop=True)


class PairDataset(Dataset):
    """Index (epoch, i) -> (image tensor, caption) of row i, or BadImage when the image is bad."""

    def __init__(self, table: pd.DataFrame, transform: Callable, seed: int = 0):
        self.paths, self.titles = table["filepath"].tolist(), table["title"].tolist()
        self.transform, self.seed = transform, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int] | int):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        try:
            image = read_image(self.paths[index])
        except ImageError as e:
            return BadImage(e.path, e.reason)
        # torchvision draws from torch's CPU generator, open_clip's colour jitter from `random`: both seeded
        # per sample from (seed, epoch, index), then restored (a loader without workers leaves the training
        # RNG as it was). Not torch.manual_seed: its lazy CUDA seeding costs 0.5 ms a sample, and grows.
        seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1, np.uint64)[0]) >> 1
        py_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
            try:
                return self.transform(image), self.titles[index]
            finally:
                random.setstate(py_state)


class Collate:
    """Stack the good samples, tokenise their captions, pass the bad ones on for reporting.
    `normalise`: finishes a batch of uint8 images (lib.data.transforms.TwoStageTransform), once per batch."""

    def __init__(self, tokenizer: Callable, normalise: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.tokenizer, self.normalise = tokenizer, normalise

    def __call__(self, samples: list) -> dict:
        good = [s for s in samples if not isinstance(s, BadImage)]
        bad = [s for s in samples if isinstance(s, BadImage)]
        if good:
            images = torch.stack([img for img, _ in good])
            if self.normalise is not None:
                images = self.normalise(images)
            texts = self.tokenizer([title for _, title in good])
        else:
            images, texts = torch.empty(0), torch.empty(0, dtype=torch.long)
        return {"images": images, "texts": texts, "bad": bad}


class EpochBatchSampler(Sampler):
    """Batches of (epoch, index) for one process: permutation of (seed, epoch), strided shard,
    full batches only, starting at batch `start` (the resume point)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, epoch: int, *, rank: int = 0,
                 world_size: int = 1, num_batches: int | None = None, start: int = 0):
        self.num_samples, self.batch_size, self.seed, self.epoch = num_samples, batch_size, seed, epoch
        self.rank, self.world_size, self.start = rank, world_size, start
        full = (num_samples // world_size) // batch_size
        self.num_batches = full if num_batches is None else min(num_batches, full)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        mine = order[:(self.num_samples // self.world_size) * self.world_size][self.rank::self.world_size]
        for b in range(self.start, self.num_batches):
            chunk = mine[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(self.epoch, int(i)) for i in chunk]

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start)


def train_loader(dataset: PairDataset, collate: Collate, sampler: EpochBatchSampler, workers: int,
                 seed: int, pin_memory: bool = False, timeout_s: float = WORKER_TIMEOUT_S) -> DataLoader:
    """One epoch's loader (from the sampler's start batch); workers get seeded base seeds, and a
    worker that yields nothing for `timeout_s` counts as hung."""
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed + sampler.epoch),
                      pin_memory=pin_memory, persistent_workers=False,
                      prefetch_factor=4 if workers > 0 else None, timeout=timeout_s if workers > 0 else 0)


def eval_loader(dataset: PairDataset, collate: Collate, batch_size: int, workers: int) -> DataLoader:
    """Sequential batches for the val loss; full batches only when there is one (a contrastive
    loss over a tail of 1-2 pairs says nothing)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=len(dataset) >= batch_size,
                      collate_fn=collate, num_workers=workers, timeout=WORKER_TIMEOUT_S if workers > 0 else 0)


@dataclass
class BadImages:
    """Images that could not be read, each once; stops the run past the allowed fraction."""

    total: int
    max_fraction: float
    seen: dict[str, str] = field(default_factory=dict)  # path -> reason

    def add(self, bad: list[BadImage]) -> list[BadImage]:
        """Record these; return the ones not seen before (to log)."""
        new = [b for b in bad if b.path not in self.seen]
        for b in new:
            self.seen[b.path] = b.reason
        return new

    def check(self) -> None:
        fraction = len(self.seen) / self.total
        if fraction <= self.max_fraction:
            return
        items = list(self.seen.items())
        shown = "\n".join(f"  {path}: {reason}" for path, reason in items[:10])
        more = f"\n  ... and {len(items) - 10} more" if len(items) > 10 else ""
        report = pd.DataFrame([(Path(p).name, p, r) for p, r in items], columns=["image", "path", "reason"])
        raise TooManyBadImages(
            f"training stopped: {len(items)} of {self.total} images ({fraction:.2%}) are missing or "
            f"unreadable, more than max_bad_image_fraction={self.max_fraction:g} allows:\n{shown}{more}\n"
            f"Restore or replace them, or raise max_bad_image_fraction to leave them out.",
            report, None)
