"""On-disk cache of gallery embeddings: encode the 17,611 test images once, reuse them in every later run.

An entry: `<key>.npy` (float32, not float16: a hit must rank bit for bit as a miss) and `<key>.json`
(the key's parts, names, the array's sha256: checked on load). Images enter the key by name, size and
mtime_ns, not content (a same-size file with the old mtime restored fools it: pass `cache_dir=None`);
the device does not (GPU and CPU differ by rounding only: a CPU review reuses a GPU run's embeddings).
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch

from lib.data.images import ImageError
from lib.files import atomic_write, atomic_write_text
from lib.paths import REPO_ROOT

DEFAULT_CACHE_DIR = "default"  # $KIT_EMBEDDING_CACHE (a folder, or "off"), else REPO_ROOT/.cache/embeddings
CACHE_ENV = "KIT_EMBEDDING_CACHE"
KEY_VERSION = 2


def resolve_dir(cache_dir: str | os.PathLike | None) -> Path | None:
    """The folder a cache_dir argument means; None: no cache (encode every time, write nothing)."""
    if cache_dir is None:
        return None
    if str(cache_dir) != DEFAULT_CACHE_DIR:
        return Path(cache_dir)
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() == "off":
        return None
    return Path(value) if value else REPO_ROOT / ".cache" / "embeddings"


def file_fingerprints(paths: Sequence[str | os.PathLike]) -> list[list]:
    """[name, size, mtime_ns] per image; a missing image raises ImageError naming it."""
    out = []
    for path in map(Path, paths):
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ImageError(path, "missing (no such file)") from None
        except OSError as e:
            raise ImageError(path, f"unreadable ({e.strerror or e})") from None
        out.append([path.name, st.st_size, st.st_mtime_ns])
    return out


def model_fingerprint(model: Any) -> str:
    """sha256 of a state dict (names, dtypes, shapes, bytes); a second per GB: prefer a checkpoint's."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().reshape(-1).contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(model_id: str, paths: Sequence[str | os.PathLike], preprocess: dict, precision: str,
              code: str) -> tuple[str, dict]:
    """(key, description): the key names the entry; the description goes in its JSON sidecar."""
    if not model_id:
        raise ValueError("model_id is empty: pass the checkpoint's sha256 or model_fingerprint(model)")
    files = file_fingerprints(paths)
    parts = {"key_version": KEY_VERSION, "model_id": str(model_id), "preprocess": preprocess,
             "code": code, "precision": precision, "open_clip": open_clip.__version__,
             "torch": torch.__version__}
    blob = json.dumps({**parts, "files": files}, sort_keys=True, separators=(",", ":"), default=str)
    key = hashlib.sha256(blob.encode()).hexdigest()[:40]
    return key, {**parts, "images": len(files), "names": [f[0] for f in files]}


def load(cache_dir: str | os.PathLike, key: str, names: Sequence[str],
         model_id: str = "") -> np.ndarray | None:
    """The cached embeddings for `key`, or None (no entry, or not of `names` in order, or of another
    `model_id`). A sidecar can be rewritten: lib.eval.retrieval also re-encodes a few random rows."""
    npy, meta_path = _paths(cache_dir, key)
    if not (npy.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        emb = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as e:
        warnings.warn(f"ignoring unreadable embedding cache {npy}: {e}", stacklevel=2)
        return None
    if meta.get("names") != list(names) or emb.dtype != np.float32 or emb.ndim != 2 or len(emb) != len(names):
        warnings.warn(f"ignoring embedding cache {npy}: it does not match the gallery", stacklevel=2)
        return None
    if model_id and meta.get("model_id") != model_id:
        warnings.warn(f"ignoring embedding cache {npy}: it was made by another model", stacklevel=2)
        return None
    if meta.get("sha256") != array_sha256(emb):
        warnings.warn(f"ignoring embedding cache {npy}: its array is not the one written (its sha256 differs "
                      f"from the one recorded in {meta_path.name}); encoding the gallery again", stacklevel=2)
        return None
    return emb


def array_sha256(emb: np.ndarray) -> str:
    """sha256 of an array's float32 bytes in C order (what an entry's JSON records)."""
    return hashlib.sha256(np.ascontiguousarray(emb, dtype=np.float32).tobytes()).hexdigest()


def save(cache_dir: str | os.PathLike, key: str, emb: np.ndarray, description: dict) -> Path:
    """Write the entry atomically (tmp file + os.replace): a crash never leaves a half entry behind."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    npy, meta_path = _paths(cache_dir, key)
    npy.parent.mkdir(parents=True, exist_ok=True)
    meta = {**description, "shape": list(emb.shape), "dtype": "float32", "sha256": array_sha256(emb)}
    atomic_write(npy, lambda f: np.save(f, emb, allow_pickle=False))
    atomic_write_text(meta_path, json.dumps(meta, indent=1, default=str))
    return npy


def _paths(cache_dir: str | os.PathLike, key: str) -> tuple[Path, Path]:
    return Path(cache_dir) / f"{key}.npy", Path(cache_dir) / f"{key}.json"
