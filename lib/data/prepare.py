"""Step 1: the organisers' files to checked, prepared tables in the run, which every later step reads:
a bad line or image stops the run here, before hours of GPU time."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.config import Config
from lib.data import images, labels
from lib.data.layout import SPLIT_FILES, image_names
from lib.data.relevance import relevance_sets, write_ground_truth
from lib.errors import KitError
from lib.files import atomic_write, atomic_write_text
from lib.paths import portable, resolve

TABLES = ("train.csv", "val.csv", "test_queries.csv", "test_gallery.csv")
AUGMENTED_TABLE = "train_augmented.csv"  # step 2's train.csv with completed car captions (03 reads it)
VAL_AUGMENTED_TABLE = "val_augmented.csv"  # step 2's val.csv with completed car queries (augment_val)


class DatasetMissing(KitError, FileNotFoundError):
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


def check_dataset(cfg: Config) -> Path:
    """The data root, when it holds every file and folder of the organisers' layout."""
    root = cfg.path("data_root")
    missing = [rel for pair in SPLIT_FILES.values() for rel in pair if not (root / rel).exists()]
    if missing:
        raise DatasetMissing(
            f"the dataset under {root} is incomplete; missing: {', '.join(missing)}.\n"
            f"Put the organisers' files there exactly as shipped (see data/README.md): "
            f"{root}/train/train_label.txt + train_images/, val/val_label.txt + val_images/, "
            f"test/test_text.txt + test_images/; or point data_root=... at them.")
    return root


def labelled_split(root: Path, split: str, vocab: labels.CarVocabulary) -> pd.DataFrame:
    label_rel, images_rel = SPLIT_FILES[split]
    table = labels.read_labels(root / label_rel)
    table.insert(0, "filepath", [portable(root / images_rel / name) for name in table["image"]])
    table.insert(1, "title", table["text"])
    return labels.add_car_fields(table, vocab)


def gallery(root: Path) -> pd.DataFrame:
    """Test gallery sorted by file name: never the file system's listing order."""
    image_dir = root / SPLIT_FILES["test"][1]
    names = image_names(image_dir)
    return pd.DataFrame({"filepath": [portable(image_dir / n) for n in names], "image": names})


def verify(table: pd.DataFrame, split: str, cfg: Config, data_dir: Path, progress: bool) -> pd.DataFrame:
    """Check every image of a split; drop the bad ones only when the profile tolerates them."""
    report = images.verify_images(
        [resolve(p) for p in table["filepath"]], max_bad_fraction=cfg.max_bad_image_fraction,
        report_path=data_dir / f"bad_images_{split}.csv", progress=progress)
    if len(report):
        bad = {Path(p).name for p in report["path"]}
        table = table[~table["image"].isin(bad)].reset_index(drop=True)
    return table


def prepare(cfg: Config, run_dir: Path, progress: bool = True) -> Prepared:
    """Read, check and write the prepared tables of every split into `<run_dir>/data/`."""
    root = check_dataset(cfg)
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)

    vocab = labels.build_car_vocabulary(labels.read_labels(root / SPLIT_FILES["train"][0]))
    train = verify(labelled_split(root, "train", vocab), "train", cfg, data_dir, progress)
    val = verify(labelled_split(root, "val", vocab), "val", cfg, data_dir, progress)
    queries = labels.read_queries(root / SPLIT_FILES["test"][0])
    test_gallery = verify(gallery(root), "test", cfg, data_dir, progress)

    for name, table in zip(TABLES, (train, val, queries, test_gallery)):
        write_table(table, data_dir / name)
    atomic_write_text(data_dir / "vocabulary.json", json.dumps(vocabulary_dict(vocab), indent=1) + "\n")
    write_ground_truth(data_dir / "val_gt.txt", list(val["text"]), relevance_sets(val))
    return Prepared(train, val, queries, test_gallery, vocab, data_dir)


def image_paths(table: pd.DataFrame) -> dict[str, Path]:
    """Image name -> its file, resolved: what plots.topk_grid looks a ranking's names up in."""
    return {name: resolve(path) for name, path in zip(table["image"], table["filepath"], strict=True)}


def write_table(table: pd.DataFrame, path: Path) -> Path:
    """A prepared table as CSV, written atomically: a later step that finds it may trust it."""
    return atomic_write(path, lambda f: table.to_csv(f, index=False, lineterminator="\n"))


def vocabulary_dict(vocab: labels.CarVocabulary) -> dict[str, list[str]]:
    return {"colours": list(vocab.colours), "types": list(vocab.types), "brands": list(vocab.brands)}


def load_prepared(run_dir: Path, augmented: bool = True) -> Prepared:
    """Read back what `prepare` wrote; `augmented`: val as the run scores it (val_augmented.csv if any)."""
    data_dir = run_dir / "data"
    if not (data_dir / "train.csv").exists():
        raise DatasetMissing(f"{data_dir}/train.csv is missing: run notebooks/01_prepare.ipynb first")
    vocab_data = json.loads((data_dir / "vocabulary.json").read_text())
    vocab = labels.CarVocabulary(**{k: tuple(v) for k, v in vocab_data.items()})
    names = (TABLES[0], val_queries_path(run_dir).name if augmented else TABLES[1], *TABLES[2:])
    return Prepared(*(pd.read_csv(data_dir / name, keep_default_na=False) for name in names), vocab, data_dir)


def val_queries_path(run_dir: Path) -> Path:
    """The val table the run scores: val_augmented.csv when step 2 wrote it, else val.csv."""
    data_dir = Path(run_dir) / "data"
    augmented = data_dir / VAL_AUGMENTED_TABLE
    return augmented if augmented.is_file() else data_dir / "val.csv"


def summary(prep: Prepared) -> pd.DataFrame:
    """Counts per split and kind, for the notebook's first table."""
    rows = []
    for split, table in (("train", prep.train), ("val", prep.val), ("test queries", prep.test_queries)):
        counts = table["kind"].value_counts()
        rows.append({"split": split, "lines": len(table), "car": int(counts.get("car", 0)),
                     "person": int(counts.get("person", 0))})
    rows.append({"split": "test gallery", "lines": len(prep.test_gallery), "car": "–", "person": "–"})
    return pd.DataFrame(rows).set_index("split")  # the gallery's images carry no kind: "–"
