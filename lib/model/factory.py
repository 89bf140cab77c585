"""open_clip models from a name plus a weights source, with the weights verified first.

The kit's tiny architectures are open_clip configs in `lib/model/configs/`, registered here:
`kit-tiny-vit` (demo profile, 2-core CPU) and `kit-micro-vit` (unit tests, milliseconds)."""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import open_clip
import torch

from lib.config import Config, ConfigError
from lib.model import text_trim
from lib.model.checkpoints import ChecksumError, verify_file
from lib.model.device import resolve_device, use_threads
from lib.model.weights import HF_HUB, LOCAL_DIR, WeightsUnavailable, weights_file
from lib.paths import resolve

MODEL_CONFIG_DIR = Path(__file__).parent / "configs"
KIT_MODELS = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))
Tokenizer = Callable[..., torch.Tensor]  # texts -> LongTensor[n, context_length]

open_clip.add_model_config(MODEL_CONFIG_DIR)


def create_model(name: str, pretrained: str = "", *, sha256: str = "", device: str | torch.device = "cpu",
                 image_size: int = 0, cache_dir: str | None = None, trim_text: bool = False
                 ) -> tuple[torch.nn.Module, Tokenizer, dict[str, Any]]:
    """(model in train mode, tokenizer, model.visual.preprocess_cfg) for architecture `name` and weights
    `pretrained`, whose file is verified first (lib.model.checkpoints). `trim_text`: lib.model.text_trim."""
    pretrained = str(pretrained or "")
    if pretrained.startswith(LOCAL_DIR):  # the folder's open_clip_config.json defines the model
        name, pretrained = pretrained, ""
    if not name.startswith((LOCAL_DIR, HF_HUB)) and name not in open_clip.list_models():
        raise ConfigError(f"unknown model {name!r}: the kit's are {', '.join(KIT_MODELS)}; "
                          "open_clip.list_models() lists the others")
    weights = weights_file(name, pretrained, cache_dir)
    if weights:
        verify_file(weights, sha256)
    elif sha256:
        raise ChecksumError(f"pretrained_sha256 is set but {name!r} / pretrained={pretrained!r} has no file")
    hub = name.startswith(HF_HUB)
    wants_weights = bool(pretrained or weights or hub)
    try:
        with contextlib.nullcontext() if wants_weights else _random_init_expected():
            model = open_clip.create_model(
                name, pretrained or None, device=resolve_device(device), cache_dir=cache_dir,
                force_image_size=image_size or None, require_pretrained=wants_weights)
    except RuntimeError as error:
        if hub:  # config or weights could not be fetched
            raise WeightsUnavailable(f"{name}: {error}. Offline, download the repo's open_clip_config.json "
                                     "and weights to a folder; use pretrained=local-dir:<folder>.") from error
        raise
    if trim_text:
        text_trim.install(model)
    return model, open_clip.get_tokenizer(name), dict(model.visual.preprocess_cfg)


def _random_init_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _random_init_expected() -> Iterator[None]:
    """Hide open_clip's warning that no weights were loaded where the kit asked for none (the demo's
    foundation pretraining; a resume, whose weights come from the checkpoint): expected, not news."""
    logging.getLogger().addFilter(_random_init_notice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(_random_init_notice)


def resolve_source(model: str, source: str) -> str:
    """Relative file and local-dir paths are relative to the repository root; tags stay as they are."""
    if source.startswith(LOCAL_DIR):
        return LOCAL_DIR + str(resolve(source[len(LOCAL_DIR):]))
    if not source or open_clip.get_pretrained_cfg(model, source):
        return source
    return str(resolve(source))


def tokenizer_for(cfg: Config) -> Tokenizer:
    """The model's open_clip tokenizer, without building the model (a local-dir folder names it)."""
    pretrained = resolve_source(cfg.model, cfg.pretrained)
    return open_clip.get_tokenizer(pretrained if pretrained.startswith(LOCAL_DIR) else cfg.model)


def model_from_config(cfg: Config, checkpoint: str | os.PathLike | None = None,
                      device: str | torch.device | None = None
                      ) -> tuple[torch.nn.Module, Tokenizer, dict[str, Any]]:
    """create_model from cfg; `checkpoint` (e.g. a run's epoch_N.pt) replaces cfg.pretrained."""
    use_threads(cfg.threads)
    source, sha = (str(checkpoint), "") if checkpoint is not None else (cfg.pretrained, cfg.pretrained_sha256)
    return create_model(cfg.model, resolve_source(cfg.model, source), sha256=sha,
                        device=device if device is not None else cfg.device, image_size=cfg.image_size,
                        trim_text=cfg.trim_text_padding)
