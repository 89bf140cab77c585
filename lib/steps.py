"""The pipeline's steps, the files each one writes, and which of them a run has completed.

`<run>/pipeline.json` records, for every completed step, when it finished and the digests of what
it wrote (its executed notebook included); a later step counts as completed only while those files
are unchanged, so a run can be continued after any interruption: the first step that did not
complete, or whose outputs were changed or lost, runs again, and every step after it. The file also
keeps the run's history (started, continued, with which overrides). Only the pipeline writes it.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from lib.files import atomic_write_text, sha256_file
from lib.model.checkpoints import recorded_sha256

STATE_FILE = "pipeline.json"
PIPELINE = ("01_prepare", "02_augment", "03_train", "04_infer")
OUTPUTS = {  # what each step writes into the run (globs, relative to it), beside its executed notebook
    "01_prepare": ("data/train.csv", "data/val.csv", "data/test_queries.csv", "data/test_gallery.csv",
                   "data/vocabulary.json", "data/val_gt.txt"),
    "02_augment": ("data/train_augmented.csv",),
    "03_train": ("metrics.jsonl", "checkpoints/epoch_*.pt", "checkpoints/soup.pt", "soup.json"),
    "04_infer": ("submission.json", "scores.json", "per_query.csv"),
}


def read_state(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return {"steps": {}, "history": []}
    return json.loads(path.read_text(encoding="utf-8"))


def _write(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / STATE_FILE, json.dumps(state, indent=1) + "\n")


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def outputs(run_dir: Path, step: str) -> list[Path]:
    """The files a completed step leaves (its executed notebook first)."""
    found = [Path(run_dir) / f"{step}.ipynb"]
    for pattern in OUTPUTS.get(step, ()):
        found += sorted(Path(run_dir).glob(pattern))
    return found


def _digest(path: Path) -> str:
    """A checkpoint's digest is its sidecar's (hashing 30 GB files at every step would cost minutes;
    loading verifies them anyway); any other file is hashed."""
    return recorded_sha256(path) or sha256_file(path)


def mark_done(run_dir: Path, step: str) -> None:
    state = read_state(run_dir)
    digests = {str(p.relative_to(run_dir)): _digest(p) for p in outputs(run_dir, step)}
    state["steps"][step] = {"finished": _now(), "outputs": digests}
    _write(run_dir, state)


def note(run_dir: Path, event: str, **details: Any) -> None:
    """Add a line to the run's history (started, continued, overrides)."""
    state = read_state(run_dir)
    state["history"].append({"at": _now(), "event": event, **details})
    _write(run_dir, state)


def completed(run_dir: Path, order: tuple[str, ...] | list[str] = PIPELINE) -> list[str]:
    """The leading steps of `order` that completed and whose outputs are still as they left them."""
    state, done = read_state(run_dir), []
    for step in order:
        record = state["steps"].get(step)
        if record is None or not _unchanged(Path(run_dir), record["outputs"]):
            break
        done.append(step)
    return done


def _unchanged(run_dir: Path, recorded: dict[str, str]) -> bool:
    return all((run_dir / rel).is_file() and _digest(run_dir / rel) == digest
               for rel, digest in recorded.items())


def forget_from(run_dir: Path, step: str, order: tuple[str, ...] | list[str] = PIPELINE) -> None:
    """Mark `step` and every later one as not done (they will run again)."""
    state = read_state(run_dir)
    for later in order[order.index(step):]:
        state["steps"].pop(later, None)
    _write(run_dir, state)
