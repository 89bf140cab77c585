"""Checkpoint files: saved atomically with a `.sha256` sidecar, verified before they are loaded.

The same state gives the same bytes (torch.save into an open file names its archive "archive", never
after a temporary file), so a checkpoint's sha256 identifies its weights. No weights load unverified."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from lib.errors import KitError
from lib.files import atomic_write, recorded_sha256, sha256_file, sidecar, write_sidecar

# open_clip's download names end in their sha256's first hex digits ("...-e32-46683a32.pt"), not all digits
NAME_HASH = re.compile(r"-(?![0-9]+$)([0-9a-f]{8,64})$")
HUB_BLOB = re.compile(r"[0-9a-f]{64}")  # huggingface_hub keeps an LFS file as blobs/<its sha256>


class ChecksumError(KitError, ValueError):
    """A file whose sha256 is not the one expected or recorded beside it, or that has none."""


def verify_file(path: str | os.PathLike, expected_sha256: str = "") -> str:
    """The file's sha256, checked against every digest there is for it (given, sidecar, in the name, the
    hub cache's blob name); a file with none, or one that differs, is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    expected = expected_sha256.strip().lower().removeprefix("sha256:")
    recorded = recorded_sha256(path)
    in_name = NAME_HASH.search(path.stem)
    blob = path.resolve().name if path.resolve().parent.name == "blobs" else ""
    actual = sha256_file(path)
    if not (expected or recorded or in_name or HUB_BLOB.fullmatch(blob)):
        raise ChecksumError(
            f"{path} has no sha256 to be checked against (no {sidecar(path).name} beside it, none given, "
            f"none in its name), so damage would go unnoticed: compare its sha256 {actual} with the "
            "published one, then pass it (pretrained_sha256=..., or the command's --sha256) or write it "
            f"beside the file: sha256sum {path.name} > {sidecar(path).name}")
    if expected and expected != actual:
        raise ChecksumError(
            f"{path}: sha256 mismatch: expected {expected} (given), actual {actual}. The file is "
            "incomplete, corrupt or not the one intended: download or copy it again and check it "
            "against its published checksum; only if this file is the right one, pass its sha256 "
            f"{actual}.")
    if recorded and recorded != actual:
        raise ChecksumError(
            f"{path}: sha256 mismatch: expected {recorded} (recorded in {sidecar(path).name} when it was "
            f"saved), actual {actual}. The file is corrupt or was changed after saving (partial copy, disk "
            "error): restore it from its source or re-create it (retrain / re-download); do not use it.")
    if in_name and not actual.startswith(in_name.group(1)):
        raise ChecksumError(f"{path}: sha256 mismatch: its name says {in_name.group(1)}..., actual {actual}: "
                            "the download is damaged, fetch it again")
    if HUB_BLOB.fullmatch(blob) and blob != actual:
        raise ChecksumError(f"{path}: sha256 mismatch: the hub cache stored it as {blob}, actual {actual}: "
                            "delete it from the cache and download it again")
    return actual


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> str:
    """Save `state` atomically, then `<path>.sha256`; returns the digest. A crash between the two
    leaves no sidecar, never a stale one. `.safetensors`: `state["state_dict"]` (or `state`) alone."""
    path = Path(path)

    def write(f) -> None:
        if path.suffix == ".safetensors":
            tensors = state.get("state_dict", state)
            f.write(save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
        else:
            try:
                torch.save(state, f)
            except RuntimeError as err:  # torch's zip writer reports a failed write as "unexpected pos"
                if isinstance(err.__context__, (OSError, KeyboardInterrupt)):
                    raise err.__context__ from None  # a full disk (-> DiskFull), Ctrl-C: what happened
                raise
        sidecar(path).unlink(missing_ok=True)  # written in full: the old digest goes before the old file

    atomic_write(path, write)
    digest = sha256_file(path)
    write_sidecar(path, digest)
    return digest


def load_checkpoint(path: str | os.PathLike, expected_sha256: str = "",
                    map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Verify, then load (`.safetensors` as {"state_dict": ...}). `mmap` (`.pt`): tensors are read when
    used, so a 30 GB checkpoint's optimizer state need never come into memory."""
    verify_file(path, expected_sha256)
    if str(path).endswith(".safetensors"):
        return {"state_dict": load_file(str(path), device=str(map_location))}
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
