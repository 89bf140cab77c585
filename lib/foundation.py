"""The demo's stand-in for LAION weights: a tiny CLIP pretrained by the kit on its own corpus.

Zero-shot caption completion and fine-tuning need a model that already knows something. The demo
makes one from a separate synthetic corpus with complete captions (never the train/val/test
images), once, with the same training loop as fine-tuning, and keeps it with its checksum.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from lib import labels, model
from lib.config import Config
from lib.prepare import portable
from lib.train import train

CORPUS_LABELS = Path("corpus") / "corpus_label.txt"
CORPUS_IMAGES = Path("corpus") / "corpus_images"


def corpus_table(data_root: Path) -> pd.DataFrame:
    table = labels.read_labels(data_root / CORPUS_LABELS)
    image_dir = data_root / CORPUS_IMAGES
    return pd.DataFrame({"filepath": [portable(image_dir / n) for n in table["image"]],
                         "title": table["text"]})


def pretraining_config(cfg: Config) -> Config:
    """Fine-tuning's loop with the foundation's own knobs: random init, a full cosine schedule,
    resuming where an interrupted pretraining stopped (a fresh start when there is nothing). No
    colour jitter: the foundation stands in for LAION weights, whatever the fine-tuning does."""
    return cfg.replace(pretrained="", pretrained_sha256="", lr=cfg.foundation_lr,
                       batch_size=cfg.foundation_batch_size, warmup_steps=cfg.foundation_warmup_steps,
                       schedule_epochs=cfg.foundation_epochs, stop_epoch=cfg.foundation_epochs,
                       accum_steps=1, resume="latest", eval_every=cfg.foundation_epochs,
                       color_jitter_prob=0.0)


def recipe(cfg: Config) -> dict:
    """What the foundation checkpoint is a function of: the corpus and the pretraining knobs."""
    manifest = cfg.path("data_root") / "MANIFEST.json"
    keys = ("model", "seed", "foundation_epochs", "foundation_lr", "foundation_batch_size",
            "foundation_warmup_steps", "precision", "trim_text_padding")
    return {"corpus_manifest_sha256": model.sha256_file(manifest) if manifest.exists() else "",
            **{k: getattr(cfg, k) for k in keys}}


def ensure_foundation(cfg: Config, progress: bool = True) -> Path:
    """The foundation checkpoint at cfg.pretrained, pretrained now if missing or made from another
    corpus or recipe (a pretraining cut off midway resumes)."""
    target = cfg.path("pretrained")
    recipe_path = target.with_name(target.name + ".recipe.json")
    wanted = recipe(cfg)
    if target.is_file() and (not cfg.generate_demo_data or _read_json(recipe_path) == wanted):
        model.verify_file(target, cfg.pretrained_sha256 or "")
        return target
    if not cfg.generate_demo_data:
        raise FileNotFoundError(f"{target} does not exist and this profile does not generate demo data")
    data_root = cfg.path("data_root").resolve()
    if target.is_file() and data_root not in target.resolve().parents:
        raise FileExistsError(
            f"{target} was pretrained on another corpus than {data_root}'s ({recipe_path} differs), and it lies "
            f"outside data_root, so another dataset may rely on it: it is not overwritten. Give this dataset its "
            f"own foundation with pretrained={cfg.data_root}/foundation/foundation.pt, or delete {target} to "
            f"pretrain it again here.")
    work_dir = target.parent / "pretraining"
    if _read_json(work_dir / "recipe.json") != wanted and work_dir.exists():
        shutil.rmtree(work_dir)  # a half-done pretraining of another corpus cannot be resumed
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "recipe.json").write_text(json.dumps(wanted, indent=1) + "\n")
    result = train(pretraining_config(cfg), work_dir, corpus_table(cfg.path("data_root")),
                   progress=progress)
    state = model.load_checkpoint(result.checkpoints[-1])
    model.save_checkpoint(target, {"name": cfg.model, "epoch": state["epoch"], "state_dict": state["state_dict"]})
    recipe_path.write_text(json.dumps(wanted, indent=1) + "\n")
    return target


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None
