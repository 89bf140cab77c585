"""open_clip models from a name plus a weights source, and checkpoints verified by sha256.

Weights sources (`pretrained`): an open_clip tag (`laion2b_s39b_b160k`), a checkpoint file (open_clip
training format `{"state_dict": ...}` with or without DDP's `module.` prefix, a bare state dict, or
`.safetensors`), a `local-dir:/folder` holding `open_clip_config.json` plus weights (open_clip's own
schema; the folder's config then defines the architecture), or "" for random initialisation.
Everything is delegated to open_clip's factory; this module adds the checks around it: checksums,
and an error that says what to do when weights cannot be had offline.

The kit's tiny architectures are open_clip JSON configs in `lib/model_configs/`, registered here:
`kit-tiny-vit` (demo profile, 2-core CPU) and `kit-micro-vit` (unit tests, milliseconds).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch
from open_clip.factory import _find_checkpoint_in_dir  # the file open_clip itself picks in a local-dir

from lib import text_trim
from lib.config import REPO_ROOT, Config

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
KIT_MODELS = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))
LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
Tokenizer = Callable[..., torch.Tensor]  # texts -> LongTensor[n, context_length]

open_clip.add_model_config(MODEL_CONFIG_DIR)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights that cannot be obtained here (offline, hub error, missing file)."""


class ChecksumError(ValueError):
    """A file whose sha256 is not the one expected or recorded beside it."""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """`auto` -> cuda when available, else cpu; a cuda device without CUDA is refused."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available here: use device=cpu or device=auto")
    return device


# --- checksums and checkpoint files -------------------------------------------------------

def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # reads in chunks


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify_file(path: str | os.PathLike, expected_sha256: str = "") -> str:
    """Check `path` against `expected_sha256` and against `<path>.sha256` when either exists.

    Returns the file's sha256, or "" when there was nothing to check against (no hashing then).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    side = _sidecar(path)
    recorded = side.read_text(encoding="utf-8").split()[0].lower() if side.is_file() else ""
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
            f"{path}: sha256 mismatch: expected {recorded} (recorded in {side.name} when it was saved), "
            f"actual {actual}. The file is corrupt or was changed after saving (partial copy, disk "
            "error): restore it from its source or re-create it (retrain / re-download); do not use it.")
    return actual


def _replace_atomically(path: Path, write: Callable[[str], None]) -> None:
    """write(tmp) a temporary file beside `path`, then os.replace it: never a partial `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> str:
    """Save `state` atomically and write `<path>.sha256` (sha256sum format); returns the digest.

    `.safetensors` paths store `state["state_dict"]` (or `state` itself) as safetensors.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    side = _sidecar(path)
    digest = ""

    def write(tmp: str) -> None:
        nonlocal digest
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            tensors = state.get("state_dict", state)
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
        else:
            torch.save(state, tmp)
        digest = sha256_file(tmp)
        side.unlink(missing_ok=True)  # a crash before the new sidecar leaves none, never a stale one

    _replace_atomically(path, write)
    _replace_atomically(side, lambda tmp: Path(tmp).write_text(f"{digest}  {path.name}\n", encoding="utf-8"))
    return digest


def load_checkpoint(path: str | os.PathLike, expected_sha256: str = "",
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify (see `verify_file`) then load; a `.safetensors` file comes back as {"state_dict": ...}."""
    verify_file(path, expected_sha256)
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return {"state_dict": load_file(str(path), device=str(map_location))}
    return torch.load(path, map_location=map_location, weights_only=True)


# --- models -------------------------------------------------------------------------------

def _offline_help(name: str, tag: str, tag_cfg: dict, error: BaseException | None) -> str:
    hub, url = tag_cfg.get("hf_hub", ""), tag_cfg.get("url", "")
    repo, filename = "/".join(hub.split("/")[:2]), "/".join(hub.split("/")[2:])  # "org/repo/[file]"
    if repo:
        files = filename or "open_clip_model.safetensors (or open_clip_pytorch_model.bin)"
        where = f"file {files} of the Hugging Face repo {repo} (https://huggingface.co/{repo})"
    else:
        where = url
    ext = Path(filename).suffix if filename else (".safetensors" if repo else Path(url).suffix or ".pt")
    local = f"data/weights/{name}_{tag}{ext}"
    from huggingface_hub import constants

    why = ("HF_HUB_OFFLINE=1 and they are not in the local cache" if constants.HF_HUB_OFFLINE
           else f"the download failed: {type(error).__name__}: {str(error)[:300]}")
    return (f"pretrained weights {name} / {tag!r} are not available here ({why}). To use them:\n"
            f"  1. on a machine with network, download the {where};\n"
            f"  2. put it on this machine, e.g. as {local};\n"
            f"  3. set `pretrained: {local}` and `pretrained_sha256: <its sha256>` in the profile, or "
            f"override pretrained={local} pretrained_sha256=<sha256>.\n"
            f"Or, where this machine has network, run with HF_HUB_OFFLINE=0 and open_clip downloads them.")


def _weights_file(name: str, pretrained: str, cache_dir: str | None) -> str | None:
    """The file open_clip will load for (name, pretrained), downloading a tag first."""
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):])
        if not (folder / "open_clip_config.json").is_file():
            raise WeightsUnavailable(f"{name}: expected a folder with open_clip_config.json and weights")
        found = _find_checkpoint_in_dir(folder)
        if not found:
            raise WeightsUnavailable(f"{name}: no weights file (*.safetensors, *.bin, *.pth) in {folder}")
        return found
    if not pretrained or name.startswith(HF_HUB):
        return None
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if tag_cfg:
        try:
            found = open_clip.download_pretrained(tag_cfg, cache_dir=cache_dir)
        except Exception as error:  # offline, hub or network error: say what to do instead
            raise WeightsUnavailable(_offline_help(name, pretrained, tag_cfg, error)) from error
        if not found:
            raise WeightsUnavailable(_offline_help(name, pretrained, tag_cfg, None))
        return found
    if Path(pretrained).is_file():
        return pretrained
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise WeightsUnavailable(
        f"pretrained={pretrained!r} for {name} is neither an existing file nor an open_clip tag"
        f"{' (tags: ' + ', '.join(tags) + ')' if tags else ''}. Put the checkpoint there (the demo "
        "profile's foundation checkpoint is written by its pretraining step) or fix `pretrained`.")


def pretrained_available(name: str, pretrained: str, cache_dir: str | None = None) -> str | None:
    """The weights file for (name, pretrained), or WeightsUnavailable saying what to do (preflight)."""
    return _weights_file(name, pretrained, cache_dir)


def create_model(name: str, pretrained: str = "", *, sha256: str = "", device: str | torch.device = "cpu",
                 image_size: int = 0, cache_dir: str | None = None, trim_text: bool = False
                 ) -> tuple[torch.nn.Module, Tokenizer, dict[str, Any]]:
    """(model, tokenizer, preprocess_cfg) for open_clip architecture `name` and weights `pretrained`.

    A weights file (given, in a local-dir, or a downloaded tag) is checked against `sha256` and its
    `.sha256` sidecar before open_clip loads it. The model comes back in train mode on `device`, with
    open_clip's default outputs; preprocess_cfg is `model.visual.preprocess_cfg` (size, mean, std...).
    `trim_text`: the text tower skips the padding after a batch's longest caption where that is exact
    (lib.text_trim).
    """
    pretrained = str(pretrained or "")
    if pretrained.startswith(LOCAL_DIR):  # the folder's open_clip_config.json defines the model
        name, pretrained = pretrained, ""
    if not name.startswith((LOCAL_DIR, HF_HUB)) and name not in open_clip.list_models():
        raise ValueError(f"unknown model {name!r}: the kit's are {', '.join(KIT_MODELS)}; "
                         "open_clip.list_models() lists the others")
    weights = _weights_file(name, pretrained, cache_dir)
    if weights:
        verify_file(weights, sha256)
    elif sha256:
        raise ChecksumError(f"pretrained_sha256 is set but {name!r} / pretrained={pretrained!r} has no file")
    hub = name.startswith(HF_HUB)
    try:
        model = open_clip.create_model(
            name, pretrained or None, device=resolve_device(device), cache_dir=cache_dir,
            force_image_size=image_size or None, require_pretrained=bool(pretrained or weights or hub))
    except RuntimeError as error:
        if hub:  # config or weights could not be fetched
            raise WeightsUnavailable(f"{name}: {error}. Offline, download the repo's open_clip_config.json "
                                     "and weights to a folder; use pretrained=local-dir:<folder>.") from error
        raise
    if trim_text:
        text_trim.install(model)
    return model, open_clip.get_tokenizer(name), dict(model.visual.preprocess_cfg)


def _resolve(model: str, source: str) -> str:
    """Relative file and local-dir paths are relative to the repository root; tags stay as they are."""
    if source.startswith(LOCAL_DIR):
        return LOCAL_DIR + str(REPO_ROOT / source[len(LOCAL_DIR):])
    if not source or open_clip.get_pretrained_cfg(model, source):
        return source
    return str(REPO_ROOT / source)  # an absolute path stays absolute


def model_from_config(cfg: Config, checkpoint: str | os.PathLike | None = None,
                      device: str | torch.device | None = None
                      ) -> tuple[torch.nn.Module, Tokenizer, dict[str, Any]]:
    """create_model from cfg.model / pretrained / pretrained_sha256 / image_size / device.

    `checkpoint` (e.g. a run's epoch_N.pt) replaces cfg.pretrained; it is verified by its sidecar.
    """
    source, sha = (str(checkpoint), "") if checkpoint is not None else (cfg.pretrained, cfg.pretrained_sha256)
    return create_model(cfg.model, _resolve(cfg.model, source), sha256=sha,
                        device=device if device is not None else cfg.device, image_size=cfg.image_size,
                        trim_text=cfg.trim_text_padding)
