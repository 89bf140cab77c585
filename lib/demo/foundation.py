"""The demo's stand-in for LAION weights: a tiny CLIP pretrained by the kit on its own synthetic corpus
(never the train/val/test images), with fine-tuning's training loop. The default world's foundation
ships in data/foundation/ with its sha256 and recipe: a run with that recipe copies it (checked)
instead of pretraining for minutes; `make foundation` (tools/foundation.py) makes it again."""
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
from lib.files import atomic_write, atomic_write_text, sha256_file, write_sidecar
from lib.model.checkpoints import load_checkpoint, save_checkpoint, verify_file
from lib.paths import REPO_ROOT, portable, resolve
from lib.progress import write as progress_write
from lib.train.launch import train

SHIPPED_DIR = REPO_ROOT / "data" / "foundation"  # <name>.pt beside <name>.json: recipe, sha256, made_on


class FoundationError(KitError, RuntimeError):
    """The foundation checkpoint cannot be made or used as the profile asks."""


def corpus_table(data_root: Path) -> pd.DataFrame:
    table = read_labels(data_root / CORPUS_FILES[0])
    image_dir = data_root / CORPUS_FILES[1]
    return pd.DataFrame({"filepath": [portable(image_dir / n) for n in table["image"]],
                         "title": table["text"]})


def pretraining_config(cfg: Config) -> Config:
    """Fine-tuning's loop with the foundation's knobs: random init, a full cosine schedule, no
    photometric jitter (the foundation stands in for LAION weights, whatever the fine-tuning does)."""
    return cfg.replace(pretrained="", pretrained_sha256="", lr=cfg.foundation_lr,
                       batch_size=cfg.foundation_batch_size, warmup_steps=cfg.foundation_warmup_steps,
                       schedule_epochs=cfg.foundation_epochs, stop_epoch=cfg.foundation_epochs,
                       accum_steps=1, eval_every=cfg.foundation_epochs,
                       submit_epoch=cfg.foundation_epochs, photometric_jitter_prob=0.0)


def recipe(cfg: Config) -> dict:
    """What the checkpoint is a function of: the corpus's content (not its file names, which depend on
    the other splits' sizes: resizing val or test keeps the foundation) and the pretraining knobs."""
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


def ensure_foundation(cfg: Config, progress: bool = True, use_shipped: bool = True) -> Path:
    """The checkpoint at cfg.pretrained: the shipped one when its recipe is this one, else pretrained now
    if missing or made from another corpus or recipe (a pretraining cut off midway resumes)."""
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
            f"dataset its own foundation with pretrained={cfg.data_root}/foundation/foundation.pt, or delete "
            f"{target} to pretrain it again here.")
    shipped = shipped_for(wanted) if use_shipped else None
    if shipped is not None:
        return _copy_shipped(shipped, target, recipe_path, wanted)
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


def shipped_for(wanted: dict, folder: Path | None = None) -> Path | None:
    """The shipped checkpoint made by exactly this recipe (corpus digest included), if there is one."""
    for meta_path in sorted((folder or SHIPPED_DIR).glob("*.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("recipe") == wanted:
            return meta_path.with_suffix(".pt")
    return None


def _copy_shipped(shipped: Path, target: Path, recipe_path: Path, wanted: dict) -> Path:
    """The shipped checkpoint into the data root, its bytes checked against the sha256 it ships with."""
    digest = json.loads(shipped.with_suffix(".json").read_text())["sha256"]
    actual = sha256_file(shipped)
    if actual != digest:
        raise FoundationError(f"{portable(shipped)} has sha256 {actual}, not the {digest} it ships with: "
                              f"restore it (git checkout -- {portable(shipped)}) or make it again with make "
                              "foundation")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda out: out.write(shipped.read_bytes()))
    write_sidecar(target, digest)
    atomic_write_text(recipe_path, json.dumps(wanted, indent=1) + "\n")
    progress_write(f"the demo's foundation model: {portable(shipped)} (sha256 {digest[:12]}..., checked) "
                   f"-> {portable(target)}")
    return target
