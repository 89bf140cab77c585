"""Where pretrained weights come from: an open_clip tag (from the hub cache), a checkpoint file, or
`local-dir:<folder>` with `open_clip_config.json` plus weights; and what to do when they cannot be had."""
from __future__ import annotations

from pathlib import Path

import open_clip
from huggingface_hub import constants

from lib.errors import KitError

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
# A local-dir's weights file, most preferred first; then any other by suffix, then name
PREFERRED_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                     "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "model.safetensors",
                     "pytorch_model.bin", "pytorch_model.pth", "model.pth")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")


class WeightsUnavailable(KitError, RuntimeError):
    """Pretrained weights that cannot be obtained here (offline, hub error, missing file)."""


def weights_in_folder(folder: Path) -> Path | None:
    found = [p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
    rank = {name: i for i, name in enumerate(PREFERRED_WEIGHTS)}
    found.sort(key=lambda p: (rank.get(p.name, len(rank)), WEIGHT_SUFFIXES.index(p.suffix), p.name))
    return found[0] if found else None


def _offline_help(name: str, tag: str, tag_cfg: dict, error: BaseException | None) -> str:
    hub, url = tag_cfg.get("hf_hub", ""), tag_cfg.get("url", "")
    repo, filename = "/".join(hub.split("/")[:2]), "/".join(hub.split("/")[2:])  # "org/repo/[file]"
    files = filename or "open_clip_model.safetensors (or open_clip_pytorch_model.bin)"
    where = f"file {files} of the Hugging Face repo {repo} (https://huggingface.co/{repo})" if repo else url
    ext = Path(filename).suffix if filename else (".safetensors" if repo else Path(url).suffix or ".pt")
    local = f"data/weights/{name}_{tag}{ext}"
    why = ("HF_HUB_OFFLINE=1 and they are not in the local cache" if constants.HF_HUB_OFFLINE
           else f"the download failed: {type(error).__name__}: {str(error)[:300]}")
    return (f"pretrained weights {name} / {tag!r} are not available here ({why}). To use them:\n"
            f"  1. on a machine with network, download the {where};\n"
            f"  2. put it on this machine, e.g. as {local};\n"
            f"  3. set `pretrained: {local}` and `pretrained_sha256: <its sha256>` in the profile, or "
            f"override pretrained={local} pretrained_sha256=<sha256>.\n"
            f"Or, where this machine has network, run with HF_HUB_OFFLINE=0 and open_clip downloads them.")


def weights_file(name: str, pretrained: str, cache_dir: str | None) -> str | None:
    """The file open_clip will load for (name, pretrained), downloading a tag first."""
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR):])
        if not (folder / "open_clip_config.json").is_file():
            raise WeightsUnavailable(f"{name}: expected a folder with open_clip_config.json and weights")
        found = weights_in_folder(folder)
        if not found:
            raise WeightsUnavailable(f"{name}: no weights file (*.safetensors, *.bin, *.pth) in {folder}")
        return str(found)
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
