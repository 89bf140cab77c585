"""Writing files so that a crash never leaves half of one, and their sha256.

Everything the kit keeps goes through `atomic_write`: a temporary file beside the target, flushed to
disk, then `os.replace`d over it; a reader sees the old file or the new one, never a mixture.
"""
from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from lib.errors import KitError


class DiskFull(KitError, OSError):
    """No space left on the device while writing a file; the file's previous version is intact."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(errno.ENOSPC, f"no space left on the device while writing {path} (its previous "
                         "version, if any, is intact): free some space (old runs under runs/, "
                         ".cache/embeddings), then continue")

    def __str__(self) -> str:
        return self.strerror


def sha256_file(path: str | os.PathLike) -> str:
    """The file's sha256 as 64 hex digits (read in chunks: fine for a 30 GB checkpoint)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(f) on a temporary file beside `path`, fsync it, then put it in place (mode 644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the kit's files are meant to be shared
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC and not isinstance(err, DiskFull):
            raise DiskFull(path) from err
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8, "\\n" line ends whatever the platform."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sidecar(path: str | os.PathLike) -> Path:
    """`<path>.sha256`, where a large file's digest is kept (checkpoints)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: str | os.PathLike) -> str:
    """The digest in `<path>.sha256`, or "" when there is none."""
    side = sidecar(path)
    return side.read_text(encoding="utf-8").split()[0].lower() if side.is_file() else ""


def write_sidecar(path: str | os.PathLike, digest: str) -> Path:
    return atomic_write_text(sidecar(path), f"{digest}  {Path(path).name}\n")
