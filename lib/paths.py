"""Where the repository is, and paths stored relative to it (so a run folder survives a move of the
checkout: notebooks, tests and torchrun children each run in a folder of their own).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve(path: str | os.PathLike) -> Path:
    """A stored path as an absolute one: relative paths are relative to the repository root."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def portable(path: str | os.PathLike) -> str:
    """The path to store: relative to the repository root when inside it, else absolute."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(Path(path).resolve())
