"""A training run's checkpoints (open_clip's format plus RNG states, bad images and train-loss sums, for
an exact resume) and which epoch is the best. They load with weights_only=True: numpy's RNG state is lists."""
from __future__ import annotations

import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.errors import KitError
from lib.files import write_sidecar
from lib.model.checkpoints import ChecksumError, verify_file
from lib.runs import RunDirError
from lib.train.log import read_metrics

LATEST = "latest.pt"
SOUP = "soup.pt"  # the run's epochs averaged (lib.soup.make); never an epoch, never resumed from
EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def link_checkpoint(src: Path, dst: Path, digest: str) -> None:
    """`dst` = `src`'s bytes (latest.pt beside epoch_N.pt), atomically, with its own .sha256: a hard
    link, not a second write of 30 GB (a copy where links are not possible)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    write_sidecar(dst, digest)


def epoch_checkpoints(ckpt_dir: Path) -> list[Path]:
    """checkpoints/epoch_N.pt sorted by N."""
    found = [(int(m.group(1)), p) for p in ckpt_dir.glob("epoch_*.pt") if (m := EPOCH_FILE.search(p.name))]
    return [p for _, p in sorted(found)]


def resume_checkpoint(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, None for a fresh start; refuses to clobber a run. `latest`: latest.pt,
    else (a kill cut its save short) the newest epoch checkpoint that verifies, else none (as open_clip)."""
    ckpt_dir = run_dir / "checkpoints"
    existing = sorted(ckpt_dir.glob("*.pt")) if ckpt_dir.is_dir() else []
    if not resume:
        if existing:
            raise RunDirError(
                f"{run_dir} already holds checkpoints ({', '.join(p.name for p in existing[:3])}"
                f"{', ...' if len(existing) > 3 else ''}): continue that run (make reproduce RESUME=<run>, "
                f"or python -m lib.train --resume latest), or "
                f"train into a new run directory")
        return None
    if resume == "latest":
        candidates = [ckpt_dir / LATEST, *reversed(epoch_checkpoints(ckpt_dir))] if ckpt_dir.is_dir() else []
        return next((p for p in candidates if _verifies(p)), None)
    path = Path(resume)
    if not path.is_file():
        raise RunDirError(f"resume={resume}: no such checkpoint")
    return path


def _verifies(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        verify_file(path)
    except ChecksumError:
        return False
    return True


@dataclass
class TrainResult:
    """What a run produced: its checkpoints, evaluation rows, and the epoch to keep."""

    run_dir: Path
    checkpoints: list[Path]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_checkpoint: Path | None = None
    best_by: str = ""  # the metric that chose it


BEST_KEYS = (("val_map10_official", max), ("val_loss", min))


def collect_result(run_dir: Path, submit_epoch: int = 0) -> TrainResult:
    """A run directory read back, with the epoch to keep: `submit_epoch` when given, else the best by val
    map10_official, else by val loss, else the last; of equal scores the earliest."""
    run_dir = Path(run_dir)
    checkpoints = epoch_checkpoints(run_dir / "checkpoints")
    rows = read_metrics(run_dir / "metrics.jsonl")
    result = TrainResult(run_dir, checkpoints, rows)
    by_epoch = {int(EPOCH_FILE.search(p.name).group(1)): p for p in checkpoints}
    if submit_epoch:
        if submit_epoch in by_epoch:
            result.best_epoch, result.best_by = submit_epoch, "submit_epoch"
            result.best_checkpoint = by_epoch[submit_epoch]
        return result
    for key, pick in BEST_KEYS:
        scored = [(r[key], r["epoch"]) for r in rows if r["epoch"] in by_epoch and r.get(key) is not None]
        if scored:
            best = pick(scored, key=lambda s: (s[0], -s[1]) if pick is max else (s[0], s[1]))
            result.best_epoch, result.best_by = best[1], key
            break
    else:
        if by_epoch:
            result.best_epoch, result.best_by = max(by_epoch), "last epoch"
    if result.best_epoch is not None:
        result.best_checkpoint = by_epoch[result.best_epoch]
    return result


class NoGain(KitError, RuntimeError):
    """Fine-tuning did not beat its starting point on val (no_gain_over_zero_shot=fail)."""


def check_gain(result: TrainResult, policy: str, resume_hint: str = "") -> str:
    """Whether the kept epoch's val mAP@10 is above epoch 0's (the starting point, zero-shot): a line
    saying so; raises NoGain when it is not and `policy` is "fail" (its message says how to go on)."""
    rows = {r["epoch"]: r for r in result.metrics}
    key = "val_map10_official"
    start, best = rows.get(0, {}).get(key), rows.get(result.best_epoch, {}).get(key)
    if start is None or best is None:
        return "no gain check: the run has no val mAP@10 at the start and at the kept epoch"
    line = f"val mAP@10 (official): {start:.4f} zero-shot -> {best:.4f} at epoch {result.best_epoch}"
    if best > start:
        return line
    problem = f"{line}: fine-tuning did not beat its starting point"
    if policy == "warn":
        return f"warning: {problem} (no_gain_over_zero_shot=warn)"
    raise NoGain(f"{problem}. Check lr, warmup_steps and the training captions; if this run is what you "
                 "meant (a low lr, a short trial), let it go on with no_gain_over_zero_shot=warn"
                 + (f": {resume_hint} ARGS=\"no_gain_over_zero_shot=warn\"" if resume_hint else ""))


def prune_checkpoints(run_dir: Path, keep: int, submit_epoch: int = 0) -> list[Path]:
    """Delete (and return) epoch checkpoints but the `keep` newest, the best so far and the one to
    submit (a ViT-bigG checkpoint with its optimizer state is ~30 GB); latest.pt survives."""
    if keep <= 0:
        return []
    result = collect_result(run_dir)
    submitted = run_dir / "checkpoints" / f"epoch_{submit_epoch}.pt"
    kept = set(result.checkpoints[-keep:]) | ({result.best_checkpoint} if result.best_checkpoint else set())
    kept |= {submitted} if submit_epoch else set()
    deleted = [p for p in result.checkpoints if p not in kept]
    for path in deleted:
        path.unlink()
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
    return deleted
