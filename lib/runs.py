"""Run folders: one per run, holding everything it produced and its `params.yaml`, the run's one
source of parameters (written only by `write_params`; later changes go through lib.steps). Folders are
named like open_clip's (`<date>-<model>-lr<lr>-b<batch>`); `<runs_root>/latest` points at the newest.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip
import torch

from lib import config as config_mod
from lib.config import Config
from lib.errors import KitError
from lib.files import atomic_write_text
from lib.paths import REPO_ROOT, portable, resolve

LATEST = "latest"
PARAMS = "params.yaml"
DEFAULT_RUNS_ROOT = REPO_ROOT / "runs"


class RunDirError(KitError, RuntimeError):
    """A run directory that cannot be used as asked (it exists, or none exists yet)."""


def default_run_name(cfg: Config, now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now()).strftime("%Y_%m_%d-%H_%M_%S")
    return f"{stamp}-{cfg.model}-lr{cfg.lr:g}-b{cfg.batch_size}"


def create_run(cfg: Config) -> Path:
    """A fresh run directory with its params.yaml; refuses an existing one (two runs' files would mix)."""
    run_dir = cfg.path("runs_root") / (cfg.run_name or default_run_name(cfg))
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunDirError(f"{run_dir} already exists: choose another run_name, or continue it with "
                          f"{resume_command(run_dir)}")
    with _writable(run_dir):
        (run_dir / "data").mkdir(parents=True, exist_ok=True)
        write_params(cfg, run_dir)
        point_latest(run_dir)
    return run_dir


@contextlib.contextmanager
def _writable(folder: Path) -> Iterator[None]:
    """Word a run folder (or runs_root) the kit cannot write in as a refusal."""
    try:
        yield
    except OSError as err:
        if not isinstance(err, PermissionError) and err.errno != errno.EROFS:
            raise
        raise RunDirError(f"cannot write in {folder} ({err.strerror or err}): a run needs a writable folder; "
                          "choose another runs_root, or make this one writable") from None


def write_params(cfg: Config, run_dir: Path) -> Path:
    """The one writer of `<run>/params.yaml`: every parameter plus what produced the run."""
    return atomic_write_text(Path(run_dir) / PARAMS, config_mod.to_yaml(cfg, provenance()))


def read_params(run_dir: Path) -> Config:
    path = Path(run_dir) / PARAMS
    if not path.is_file():
        raise RunDirError(f"{run_dir} has no {PARAMS}: it is not a run folder (make reproduce creates one)")
    return config_mod.load_saved(path)


def find_run(run_dir: str | os.PathLike = "") -> Path:
    """An existing run folder, absolute: the one given (as given, else relative to the repository
    root), or the newest run: the `latest` link under runs/ (one a profile) pointed last."""
    if not run_dir:
        candidates = (DEFAULT_RUNS_ROOT / LATEST, *DEFAULT_RUNS_ROOT.glob(f"*/{LATEST}"))
        links = [p for p in candidates if p.exists()]
        if not links:
            raise RunDirError(f"no run under {portable(DEFAULT_RUNS_ROOT)}/ yet: make reproduce (or run "
                              "notebooks/01_prepare.ipynb) first, or give run_dir")
        folder = max(links, key=lambda p: p.lstat().st_mtime)
    else:
        folder = Path(run_dir) if Path(run_dir).exists() else resolve(run_dir)
    if not folder.exists():
        raise RunDirError(f"no run at {folder}: make reproduce (or run notebooks/01_prepare.ipynb) first")
    if not folder.is_dir():
        raise RunDirError(f"{folder} is a file, not a run folder (a run is a folder with a {PARAMS})")
    if not (folder / PARAMS).is_file():
        raise RunDirError(f"{folder} is not a run folder (it has no {PARAMS}); nothing was written there. "
                          "A run is a folder under runs/<profile>/ that make reproduce made")
    return folder.resolve()


def latest_link(run_dir: Path) -> Path:
    """The `latest` link beside a run (`<runs_root>/latest`)."""
    return Path(run_dir).parent / LATEST


def resume_command(run_dir: str | os.PathLike) -> str:
    """The command that continues a run (every "continue with" hint names it)."""
    return f"make reproduce RESUME={portable(run_dir)}"


def describe(cfg: Config, run_dir: Path) -> str:
    """What a notebook prints first: the run, and its parameters that differ from the reference recipe."""
    changed = ", ".join(f"{k}={v}" for k, v in config_mod.differences(cfg).items()) or "nothing"
    return (f"run {portable(run_dir)} (parameters: its {PARAMS})\n"
            f"differing from the reference recipe: {changed}")


def point_latest(run_dir: Path) -> None:
    """Atomically repoint `<runs_root>/latest` at run_dir (relative link, so the tree can move)."""
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, latest_link(run_dir))


def provenance() -> dict[str, Any]:
    """What produced a run, for params.yaml: the code version and the library versions."""
    return {"git_sha": git_commit(), "python": platform.python_version(), "torch": str(torch.__version__),
            "open_clip": str(open_clip.__version__), "cuda": str(torch.version.cuda or "none"),
            "host": platform.node()}


def git_commit() -> str:
    """HEAD's sha, with `-dirty` when tracked files differ from it; "unknown" outside a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


# --- one writer at a time ------------------------------------------------------------------------
# Every process working in a run (the pipeline, each notebook's kernel) holds a shared lock on
# <run>/.lock for its lifetime; a continuing pipeline first waits until nobody holds it, so that the
# kernel of a killed pipeline never writes into a run that is being continued.
LOCK = ".lock"
_held: dict[Path, int] = {}


def hold(run_dir: Path) -> None:
    """Take this process's shared lock on the run (kept until the process ends)."""
    run_dir = Path(run_dir).resolve()
    if run_dir not in _held:
        fd = _open_lock(run_dir)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _held[run_dir] = fd


def _open_lock(run_dir: Path) -> int:
    with _writable(run_dir):
        return os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)


def wait_until_idle(run_dir: Path, timeout_s: float = 30.0) -> None:
    """Return once no other process holds the run's lock; refuse after `timeout_s`."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:  # our own shared lock would block the exclusive one
        os.close(_held.pop(run_dir))
    fd = _open_lock(run_dir)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunDirError(
                        f"another process is still working in {run_dir} (a pipeline or a notebook kernel): "
                        "let it finish or stop it, then continue") from None
                time.sleep(0.2)
    finally:
        os.close(fd)
