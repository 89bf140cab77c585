"""Run directories: one folder per run holding everything it produced, named from its key parameters.

open_clip's habit (`<date>-<model>-lr<lr>-b<batch>`), so a listing of `runs/` reads as a table of
experiments, and `runs/latest` always points at the newest one for notebooks run by hand.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from lib import config as config_mod
from lib.config import REPO_ROOT, Config

LATEST = "latest"


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (it exists, or none exists yet)."""


def default_run_name(cfg: Config, now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now()).strftime("%Y_%m_%d-%H_%M_%S")
    return f"{stamp}-{cfg.model}-lr{cfg.lr:g}-b{cfg.batch_size}"


def create_run_dir(cfg: Config) -> Path:
    """A fresh run directory; refuses to reuse an existing one (that would mix two runs' files)."""
    runs_root = cfg.path("runs_root")
    run_dir = runs_root / (cfg.run_name or default_run_name(cfg))
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(
            f"{run_dir} already exists: choose another run_name, or resume it with resume=latest"
        )
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    point_latest(run_dir)
    return run_dir


def point_latest(run_dir: Path) -> None:
    """Atomically repoint `<runs_root>/latest` at run_dir (relative link, so the tree can move)."""
    link = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


def resolve_run_dir(cfg: Config, run_dir: str = "", create: bool = False) -> Path:
    """The run a notebook works in: the one given, a new one (first step), or `latest`."""
    if run_dir:
        path = Path(run_dir)
        path = path if path.is_absolute() else REPO_ROOT / path
        (path / "data").mkdir(parents=True, exist_ok=True)
        return path.resolve()
    if create:
        return create_run_dir(cfg)
    latest = cfg.path("runs_root") / LATEST
    if not latest.exists():
        raise RunDirError(f"no run yet under {latest.parent}: run notebooks/01_prepare.ipynb first")
    return latest.resolve()


def provenance() -> dict[str, Any]:
    """What produced a run, for params.yaml: the code version and the library versions."""
    import open_clip
    import torch

    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        sha, dirty = "unknown", False
    return {
        "git_sha": sha + ("-dirty" if dirty else ""),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "open_clip": str(open_clip.__version__),
        "cuda": str(torch.version.cuda or "none"),
        "host": platform.node(),
    }


def save_params(cfg: Config, run_dir: Path) -> Path:
    path = run_dir / "params.yaml"
    config_mod.save(cfg, path, extra=provenance())
    return path
