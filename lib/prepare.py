"""Step 1 of the pipeline: from the organisers' files to checked, prepared tables in the run.

Every later step reads these tables instead of the raw label files, so parsing, vocabulary and
image checks happen once, and a bad line or image stops the run here, before hours of GPU time.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib import demo_data, images, labels
from lib.config import REPO_ROOT, Config

SPLIT_FILES = {
    "train": ("train/train_label.txt", "train/train_images"),
    "val": ("val/val_label.txt", "val/val_images"),
    "test": ("test/test_text.txt", "test/test_images"),
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class DatasetMissing(FileNotFoundError):
    """The dataset is not where the profile says; the message says what to put where."""


@dataclass(frozen=True)
class Prepared:
    """The prepared tables of one run (also written as CSV under `<run>/data/`)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test_queries: pd.DataFrame
    test_gallery: pd.DataFrame
    vocabulary: labels.CarVocabulary
    data_dir: Path


def ensure_dataset(cfg: Config, progress: bool = True) -> Path:
    """Generate the demo data when the profile asks for it; check the layout either way."""
    root = cfg.path("data_root")
    if cfg.generate_demo_data:
        demo_data.make_demo_dataset(
            root, seed=cfg.demo_seed, train_size=cfg.demo_train_size, val_size=cfg.demo_val_size,
            test_size=cfg.demo_test_size, corpus_size=cfg.demo_corpus_size, progress=progress,
        )
    missing = [rel for pair in SPLIT_FILES.values() for rel in pair if not (root / rel).exists()]
    if missing:
        raise DatasetMissing(
            f"the dataset under {root} is incomplete; missing: {', '.join(missing)}.\n"
            f"Put the organisers' files there exactly as shipped (see data/README.md): "
            f"{root}/train/train_label.txt + train_images/, val/val_label.txt + val_images/, "
            f"test/test_text.txt + test_images/; or point data_root=... at them."
        )
    return root


def portable(path: Path) -> str:
    """Paths inside the repository are stored relative to it, so tables survive a move."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path.resolve())


def resolve(filepath: str) -> Path:
    path = Path(filepath)
    return path if path.is_absolute() else REPO_ROOT / path


def labelled_split(root: Path, split: str, vocab: labels.CarVocabulary | None) -> pd.DataFrame:
    label_rel, images_rel = SPLIT_FILES[split]
    table = labels.read_labels(root / label_rel)
    image_dir = root / images_rel
    table.insert(0, "filepath", [portable(image_dir / name) for name in table["image"]])
    table.insert(1, "title", table["text"])
    if vocab is not None:
        table = labels.add_car_fields(table, vocab)
    return table


def gallery(root: Path) -> pd.DataFrame:
    """Test gallery sorted by file name: never the file system's listing order."""
    image_dir = root / SPLIT_FILES["test"][1]
    names = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return pd.DataFrame({"filepath": [portable(image_dir / n) for n in names], "image": names})


def verify(table: pd.DataFrame, split: str, cfg: Config, data_dir: Path, progress: bool) -> pd.DataFrame:
    """Check every image of a split; drop the bad ones only when the profile tolerates them."""
    report = images.verify_images(
        [resolve(p) for p in table["filepath"]], max_bad_fraction=cfg.max_bad_image_fraction,
        report_path=data_dir / f"bad_images_{split}.csv", progress=progress,
    )
    if len(report):
        bad = {Path(p).name for p in report["path"]}
        table = table[~table["image"].isin(bad)].reset_index(drop=True)
    return table


def prepare(cfg: Config, run_dir: Path, progress: bool = True) -> Prepared:
    """Read, check and write the prepared tables of every split into `<run_dir>/data/`."""
    root = ensure_dataset(cfg, progress=progress)
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)

    raw_train = labels.read_labels(root / SPLIT_FILES["train"][0])
    vocab = labels.build_car_vocabulary(raw_train, types=tuple(cfg.car_types))
    train = verify(labelled_split(root, "train", vocab), "train", cfg, data_dir, progress)
    val = verify(labelled_split(root, "val", vocab), "val", cfg, data_dir, progress)
    queries = labels.read_queries(root / SPLIT_FILES["test"][0])
    test_gallery = verify(gallery(root), "test", cfg, data_dir, progress)

    train.to_csv(data_dir / "train.csv", index=False)
    val.to_csv(data_dir / "val.csv", index=False)
    queries.to_csv(data_dir / "test_queries.csv", index=False)
    test_gallery.to_csv(data_dir / "test_gallery.csv", index=False)
    (data_dir / "vocabulary.json").write_text(json.dumps(vocabulary_dict(vocab), indent=1) + "\n")
    labels.write_ground_truth(data_dir / "val_gt.txt", list(val["text"]), labels.relevance_sets(val))
    return Prepared(train, val, queries, test_gallery, vocab, data_dir)


def vocabulary_dict(vocab: labels.CarVocabulary) -> dict[str, list[str]]:
    return {"colours": list(vocab.colours), "types": list(vocab.types), "brands": list(vocab.brands)}


def load_prepared(run_dir: Path) -> Prepared:
    """Read back what `prepare` wrote (later notebooks start here)."""
    data_dir = run_dir / "data"
    if not (data_dir / "train.csv").exists():
        raise FileNotFoundError(f"{data_dir}/train.csv is missing: run notebooks/01_prepare.ipynb first")
    vocab_data = json.loads((data_dir / "vocabulary.json").read_text())
    vocab = labels.CarVocabulary(**{k: tuple(v) for k, v in vocab_data.items()})
    read = lambda name: pd.read_csv(data_dir / name, keep_default_na=False)  # noqa: E731
    return Prepared(read("train.csv"), read("val.csv"), read("test_queries.csv"),
                    read("test_gallery.csv"), vocab, data_dir)


def summary(prep: Prepared) -> pd.DataFrame:
    """Counts per split and kind, for the notebook's first table."""
    rows = []
    for split, table in (("train", prep.train), ("val", prep.val), ("test queries", prep.test_queries)):
        counts = table["kind"].value_counts()
        rows.append({"split": split, "lines": len(table), "car": int(counts.get("car", 0)),
                     "person": int(counts.get("person", 0))})
    rows.append({"split": "test gallery", "lines": len(prep.test_gallery), "car": None, "person": None})
    return pd.DataFrame(rows)
