"""The demo's stand-in for LAION weights: a tiny CLIP pretrained by the kit on its own corpus.

Zero-shot caption completion and fine-tuning need a model that already knows something. The demo
makes one from a separate synthetic corpus with complete captions (never the train/val/test
images), once, with the same training loop as fine-tuning, and keeps it with its checksum.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd

from lib.config import Config
from lib.data.labels import read_labels
from lib.demo.dataset import CORPUS_FILES
from lib.errors import KitError
from lib.files import atomic_write_text, sha256_file
from lib.model.checkpoints import load_checkpoint, save_checkpoint, verify_file
from lib.paths import portable, resolve
from lib.progress import write as progress_write
from lib.train.launch import train


class FoundationError(KitError, RuntimeError):
    """The foundation checkpoint cannot be made or used as the profile asks."""


def corpus_table(data_root: Path) -> pd.DataFrame:
    table = read_labels(data_root / CORPUS_FILES[0])
    image_dir = data_root / CORPUS_FILES[1]
    return pd.DataFrame({"filepath": [portable(image_dir / n) for n in table["image"]],
                         "title": table["text"]})


def pretraining_config(cfg: Config) -> Config:
    """Fine-tuning's loop with the foundation's own knobs: random init, a full cosine schedule,
    resuming where an interrupted pretraining stopped (a fresh start when there is nothing). No
    photometric jitter: the foundation stands in for LAION weights, whatever the fine-tuning does."""
    return cfg.replace(pretrained="", pretrained_sha256="", lr=cfg.foundation_lr,
                       batch_size=cfg.foundation_batch_size, warmup_steps=cfg.foundation_warmup_steps,
                       schedule_epochs=cfg.foundation_epochs, stop_epoch=cfg.foundation_epochs,
                       accum_steps=1, eval_every=cfg.foundation_epochs,
                       photometric_jitter_prob=0.0)


def recipe(cfg: Config) -> dict:
    """What the foundation checkpoint is a function of: the corpus's content in order (captions and
    image bytes, not file names, which also depend on the other splits' sizes: resizing val or test
    keeps the foundation) and the pretraining knobs."""
    keys = ("model", "seed", "foundation_epochs", "foundation_lr", "foundation_batch_size",
            "foundation_warmup_steps", "precision", "trim_text_padding", "threads")
    return {"corpus_sha256": corpus_digest(cfg.path("data_root")), **{k: getattr(cfg, k) for k in keys}}


def corpus_digest(data_root: Path) -> str:
    """sha256 over the corpus's captions and images, line by line ("" when there is no corpus)."""
    if not (data_root / CORPUS_FILES[0]).is_file():
        return ""
    digest = hashlib.sha256()
    for path, title in corpus_table(data_root).itertuples(index=False):
        digest.update(title.encode() + b"\0" + bytes.fromhex(sha256_file(resolve(path))))
    return digest.hexdigest()


def ensure_foundation(cfg: Config, progress: bool = True) -> Path:
    """The foundation checkpoint at cfg.pretrained, pretrained now if missing or made from another
    corpus or recipe (a pretraining cut off midway resumes)."""
    target = cfg.path("pretrained")
    recipe_path = target.with_name(target.name + ".recipe.json")
    wanted = recipe(cfg)
    if target.is_file() and (not cfg.generate_demo_data or _read_json(recipe_path) == wanted):
        verify_file(target, cfg.pretrained_sha256 or "")
        return target
    if not cfg.generate_demo_data:
        raise FoundationError(f"{target} does not exist and this profile does not generate demo data: "
                              "download the pretrained weights (data/README.md) or point pretrained=... "
                              "at them")
    data_root = cfg.path("data_root").resolve()
    if target.is_file() and data_root not in target.resolve().parents:
        raise FoundationError(
            f"{target} was pretrained on another corpus than {data_root}'s ({recipe_path} differs), and it "
            f"lies outside data_root, so another dataset may rely on it: it is not overwritten. Give this "
            f"dataset its "
            f"own foundation with pretrained={cfg.data_root}/foundation/foundation.pt, or delete {target} to "
            f"pretrain it again here.")
    work_dir = target.parent / "pretraining"
    if _read_json(work_dir / "recipe.json") != wanted and work_dir.exists():
        shutil.rmtree(work_dir)  # a half-done pretraining of another corpus cannot be resumed
    work_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work_dir / "recipe.json", json.dumps(wanted, indent=1) + "\n")
    progress_write(f"pretraining the demo's foundation model into {portable(target)} (once: later runs "
                   "find it)")
    result = train(pretraining_config(cfg), work_dir, corpus_table(cfg.path("data_root")),
                   progress=progress, resume="latest")
    state = load_checkpoint(result.checkpoints[-1])
    save_checkpoint(target, {"name": cfg.model, "epoch": state["epoch"], "state_dict": state["state_dict"]})
    atomic_write_text(recipe_path, json.dumps(wanted, indent=1) + "\n")
    return target


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None
