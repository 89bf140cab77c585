"""Checkpoint files: saved atomically with a sha256 beside them, verified before they are loaded.

`save_checkpoint` writes `<file>` and `<file>.sha256` (sha256sum format). The same state gives the
same bytes (torch.save into an open file names the archive's root folder "archive", never after a
temporary file), so a checkpoint's sha256 identifies its weights. `load_checkpoint` refuses a file
whose bytes differ from its sidecar or from an expected digest.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lib.errors import KitError
from lib.files import atomic_write, atomic_write_text, sha256_file


class ChecksumError(KitError, ValueError):
    """A file whose sha256 is not the one expected or recorded beside it."""


def sidecar(path: str | os.PathLike) -> Path:
    """`<path>.sha256`, where a checkpoint's digest is kept."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: str | os.PathLike) -> str:
    """The digest in `<path>.sha256`, or "" when there is none."""
    side = sidecar(path)
    return side.read_text(encoding="utf-8").split()[0].lower() if side.is_file() else ""


def write_sidecar(path: str | os.PathLike, digest: str) -> Path:
    return atomic_write_text(sidecar(path), f"{digest}  {Path(path).name}\n")


def verify_file(path: str | os.PathLike, expected_sha256: str = "") -> str:
    """Check `path` against `expected_sha256` and against `<path>.sha256` when either exists.

    Returns the file's sha256, or "" when there was nothing to check against (no hashing then).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    recorded = recorded_sha256(path)
    expected = expected_sha256.strip().lower().removeprefix("sha256:")
    if not expected and not recorded:
        return ""
    actual = sha256_file(path)
    if expected and expected != actual:
        raise ChecksumError(
            f"{path}: sha256 mismatch: expected {expected} (pretrained_sha256), actual {actual}. The file "
            "is incomplete, corrupt or not the one intended: download or copy it again and check it "
            "against its published checksum; only if this file is the right one, set pretrained_sha256 "
            f"to {actual}.")
    if recorded and recorded != actual:
        raise ChecksumError(
            f"{path}: sha256 mismatch: expected {recorded} (recorded in {sidecar(path).name} when it was "
            f"saved), actual {actual}. The file is corrupt or was changed after saving (partial copy, disk "
            "error): restore it from its source or re-create it (retrain / re-download); do not use it.")
    return actual


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> str:
    """Save `state` atomically, then `<path>.sha256`; returns the digest.

    `.safetensors` paths store `state["state_dict"]` (or `state` itself) as safetensors. A failed
    write leaves the previous file and its sidecar; a crash between the two renames leaves no
    sidecar, never a stale one.
    """
    path = Path(path)

    def write(f) -> None:
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            tensors = state.get("state_dict", state)
            f.write(save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
        else:
            torch.save(state, f)
        sidecar(path).unlink(missing_ok=True)  # written in full: the old digest goes before the old file

    atomic_write(path, write)
    digest = sha256_file(path)
    write_sidecar(path, digest)
    return digest


def load_checkpoint(path: str | os.PathLike, expected_sha256: str = "",
                    map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Verify (see `verify_file`) then load; a `.safetensors` file comes back as {"state_dict": ...}.

    `mmap`: tensors are mapped from the file and read when used, so a 30 GB training checkpoint whose
    weights alone are wanted never brings its optimizer state into memory (`.pt` files only).
    """
    verify_file(path, expected_sha256)
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return {"state_dict": load_file(str(path), device=str(map_location))}
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
