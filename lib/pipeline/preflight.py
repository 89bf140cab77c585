"""Checks made before any long work: the dataset, the weights and the device a profile needs, so that
a competition run lacking one stops in the first second saying what to put where.
"""
from __future__ import annotations

from pathlib import Path

import torch

from lib.config import Config
from lib.data.prepare import DatasetMissing, check_dataset
from lib.errors import KitError
from lib.model.weights import LOCAL_DIR, WeightsUnavailable, weights_file
from lib.paths import resolve

# Models this large are not trained or encoded on a CPU in useful time.
GPU_ONLY_MODELS = ("ViT-bigG-14", "ViT-G-14", "ViT-H-14", "ViT-L-14")


def problems(cfg: Config) -> list[str]:
    found: list[str] = []
    if not cfg.generate_demo_data:
        try:
            check_dataset(cfg)
        except DatasetMissing as err:
            found.append(str(err))
    found += weight_problems(cfg)
    wants_gpu = cfg.model in GPU_ONLY_MODELS or cfg.device.startswith("cuda")
    if wants_gpu and not torch.cuda.is_available():
        found.append(f"model {cfg.model} (device={cfg.device}) needs a CUDA GPU and none is visible here; "
                     "run on a GPU machine, or use the demo profile (make reproduce) on this one")
    return found


def weight_problems(cfg: Config) -> list[str]:
    """A file source must exist; a hub tag must be cached when the hub is off."""
    source = cfg.pretrained
    if not source:
        return []
    if source.startswith(LOCAL_DIR):
        folder = resolve(source.removeprefix(LOCAL_DIR))
        return [] if folder.is_dir() else [f"pretrained={source}: folder {folder} does not exist"]
    if "/" in source or Path(source).suffix in (".pt", ".pth", ".bin", ".safetensors"):  # a file
        path = cfg.path("pretrained")
        if path.exists() or cfg.generate_demo_data:  # the demo makes its foundation model itself
            return []
        return [f"pretrained={source}: file {path} does not exist; download it (data/README.md) "
                "or point pretrained=... at it"]
    try:
        weights_file(cfg.model, source, None)
    except WeightsUnavailable as err:
        return [str(err)]
    return []


def check(cfg: Config) -> None:
    found = problems(cfg)
    if found:
        raise KitError(f"profile {cfg.profile!r} cannot run on this machine yet:\n- " + "\n- ".join(found))
