"""The demo dataset: a miniature of the competition in its exact layout and formats (data/README.md),
with truth/{split}.csv (what was drawn) and MANIFEST.json (parameters, code, checksums). Captions are as
incomplete as the real ones; test queries and the corpus name colour, brand and type. An image depends
only on (seed, split, index), whatever the worker count; regeneration removes only what this wrote."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.config import Config
from lib.data.layout import SPLIT_FILES, TEST_GT_FILE
from lib.data.relevance import relevance_sets, write_ground_truth
from lib.demo import captions as dc
from lib.demo.draw_car import draw_car
from lib.demo.draw_person import draw_person
from lib.files import sha256_file
from lib.progress import bar as progress_bar

GENERATOR = "lib.demo_data"  # the MANIFEST's name for this generator (kept: it marks data it may replace)
VERSION = "1"
SPLITS = ("train", "val", "test", "corpus")
SPLIT_ID = {"train": 1, "val": 2, "test": 3, "corpus": 4}
CORPUS_FILES = ("corpus/corpus_label.txt", "corpus/corpus_images")  # the foundation's pretraining corpus
IMAGE_DIRS = {**{s: SPLIT_FILES[s][1] for s in SPLIT_FILES}, "corpus": CORPUS_FILES[1]}
TEXT_FILES = {**{s: SPLIT_FILES[s][0] for s in SPLIT_FILES}, "corpus": CORPUS_FILES[0]}
OWNED = (*SPLITS, "truth", "MANIFEST.json")  # what a regeneration may remove under root
PARTIAL = ".demo_partial"  # marker: a generation started here and did not finish
# Real shares of cars: train 42,704 of 126,117; val 3,413 of 10,000; test 7,611 of 17,611.
CAR_SHARE = {"train": 42704 / 126117, "val": 3413 / 10000, "test": 7611 / 17611, "corpus": 1 / 3}
SURVEILLANCE_SHARE = {"train": 0.0, "val": 0.0, "test": 1.0, "corpus": 0.3}
JPEG_QUALITY = 90
PERSON_NUMBERS = 900_000  # train/val/corpus persons are 000000-899999, test persons 900000-999999
TRUTH_COLUMNS = ["image", "kind", "domain", "colour", "brand", "type", "vector", "boots",
                 "attribute", "text", "width", "height"]


@dataclass(frozen=True)
class Item:
    """One image to draw and its label (or query) line."""

    split: str
    index: int
    image: str
    kind: str
    domain: str
    colour: str = ""
    brand: str = ""
    type: str = ""
    vector: str = ""  # person: 21 comma-separated bits
    boots: bool = False
    attribute: str = ""
    text: str = ""


def _counts(split: str, size: int) -> tuple[int, int]:
    n_car = min(size - 1, max(1, round(size * CAR_SHARE[split])))
    return n_car, size - n_car


def _names(seed: int, sizes: dict[str, int]) -> dict[str, tuple[list[str], list[str]]]:
    """(car names, person names) per split, unique across all splits, as the organisers name them."""
    rng = np.random.default_rng([seed, 0])
    counts = {s: _counts(s, n) for s, n in sizes.items()}
    if sum(c[1] for s, c in counts.items() if s != "test") > PERSON_NUMBERS or counts["test"][1] > 100_000:
        raise ValueError(f"too many persons for 6-digit names: {counts}")
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    seen: set[str] = set()
    out = {}
    n_people = [counts[s][1] for s in ("train", "val", "corpus")]
    drawn = np.split(rng.choice(PERSON_NUMBERS, sum(n_people), replace=False), np.cumsum(n_people)[:-1])
    people = {s: sorted(p.tolist()) for s, p in zip(("train", "val", "corpus"), drawn)}
    people["test"] = (PERSON_NUMBERS + rng.choice(100_000, counts["test"][1], replace=False)).tolist()
    for split in SPLITS:
        n_car = counts[split][0]
        if split == "test":
            cars = [f"vehicle_{k:07d}.jpg" for k in rng.choice(10_000_000, n_car, replace=False)]
        else:
            cars = []
            while len(cars) < n_car:
                for row in letters[rng.integers(0, 26, (n_car - len(cars), 10))]:
                    name = "".join(row) + ".jpg"
                    if name not in seen:
                        seen.add(name)
                        cars.append(name)
        out[split] = (cars, [f"{k:06d}.jpg" for k in people[split]])
    return out


def _items(seed: int, split: str, cars: list[str], persons: list[str]) -> list[Item]:
    rng = np.random.default_rng([seed, SPLIT_ID[split], 0])
    full = split in ("test", "corpus")
    surveillance = SURVEILLANCE_SHARE[split]
    items = []
    for i, name in enumerate(cars):
        domain = "surveillance" if rng.random() < surveillance else "web"
        colour, brand, kind = dc.sample_car(rng)
        attribute, text = dc.car_label(colour, brand, kind, rng, full=full)
        items.append(Item(split, i, name, "car", domain, colour, brand, kind, attribute=attribute, text=text))
    for j, (name, (vector, boots)) in enumerate(zip(persons, dc.sample_persons(rng, len(persons)))):
        domain = "surveillance" if rng.random() < surveillance else "web"
        attribute = dc.person_attribute(vector)
        items.append(Item(split, len(cars) + j, name, "person", domain, vector=attribute, boots=boots,
                          attribute=attribute, text=dc.person_caption(vector, boots, rng)))
    return items


def code_fingerprint() -> str:
    """sha256 of the generator's sources and assets: data made by other code is regenerated."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in (here / "dataset.py", here / "captions.py", here / "scene.py", here / "draw_car.py",
                 here / "draw_person.py", dc.PERSON_TABLE):
        digest.update(path.name.encode() + b"\0" + path.read_bytes().replace(b"\r\n", b"\n"))
    return digest.hexdigest()


def _integer(value, name: str, least: int, what: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def plan_dataset(seed: int, sizes: dict[str, int]) -> dict[str, list[Item]]:
    """Every split's items (names, truth, label or query lines) without drawing an image."""
    names = _names(seed, sizes)
    return {s: _items(seed, s, *names[s]) for s in SPLITS}


def _render(job: tuple[Path, int, list[Item]]) -> list[tuple[int, int, int, str]]:
    """Draw, encode and write a chunk; (index, width, height, sha256) per image."""
    folder, seed, items = job
    out = []
    for item in items:
        rng = np.random.default_rng([seed, SPLIT_ID[item.split], 1, item.index])
        if item.kind == "car":
            img = draw_car(item.colour, item.brand, item.type, item.domain, rng)
        else:
            img = draw_person([int(b) for b in item.vector.split(",")], item.boots, item.domain, rng)
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"could not encode {item.image}")
        data = buf.tobytes()
        (folder / item.image).write_bytes(data)
        out.append((item.index, img.shape[1], img.shape[0], hashlib.sha256(data).hexdigest()))
    return out


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8", newline="\n")


def _up_to_date(root: Path, wanted: dict) -> bool:
    try:
        manifest = json.loads((root / "MANIFEST.json").read_text())
    except (OSError, ValueError):
        return False
    if any(manifest.get(k) != v for k, v in wanted.items()) or (root / PARTIAL).exists():
        return False
    return (all((root / rel).is_file() and sha256_file(root / rel) == digest
                for rel, digest in manifest.get("files", {}).items())
            and all((root / IMAGE_DIRS[s]).is_dir() and len(os.listdir(root / IMAGE_DIRS[s])) == n
                    for s, n in manifest["sizes"].items()))


def _clear(root: Path) -> None:
    """Remove what an earlier generation wrote; refuse a folder this generator did not write."""
    present = [name for name in OWNED if (root / name).exists()]
    if not present:
        return
    try:
        ours = json.loads((root / "MANIFEST.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError):
        ours = False
    if not ours and not (root / PARTIAL).exists():
        raise FileExistsError(
            f"{root} holds {', '.join(present)} but no demo MANIFEST.json: it looks like a dataset the "
            f"demo generator did not write; refusing to overwrite it (choose another data_root)")
    for path in (root / name for name in present):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def ensure_demo_data(cfg: Config, progress: bool = True) -> Path:
    """The profile's demo dataset under data_root, generated when missing or made otherwise."""
    return make_demo_dataset(cfg.path("data_root"), seed=cfg.demo_seed, train_size=cfg.demo_train_size,
                             val_size=cfg.demo_val_size, test_size=cfg.demo_test_size,
                             corpus_size=cfg.demo_corpus_size, progress=progress)


def make_demo_dataset(root: str | Path, *, seed: int = 0, train_size: int, val_size: int, test_size: int,
                      corpus_size: int, progress: bool = True, workers: int | None = None) -> Path:
    """Generate (or keep, when already there with these parameters) the demo dataset under root. Sizes are
    lines per split (test: gallery images = queries); workers: drawing processes (default: up to 8)."""
    root = Path(root)
    sizes = {s: _integer(n, f"{s}_size", 2, "an integer >= 2 (one car, one person)")
             for s, n in zip(SPLITS, (train_size, val_size, test_size, corpus_size))}
    seed = _integer(seed, "seed", 0, "a non-negative integer")
    wanted = {"generator": GENERATOR, "version": VERSION, "code": code_fingerprint(), "seed": seed,
              "sizes": sizes}
    if _up_to_date(root, wanted):
        return root
    root.mkdir(parents=True, exist_ok=True)
    _clear(root)
    (root / PARTIAL).write_text("demo generation in progress\n")

    items = plan_dataset(seed, sizes)
    results = _render_all(root, seed, items, workers, progress)
    files = _write_texts(root, items, results)
    image_lists = {s: "".join(f"{i.image} {results[s, i.index][2]}\n" for i in items[s]) for s in SPLITS}
    counts = {s: dict(zip(("car", "person"), _counts(s, n))) for s, n in sizes.items()}
    manifest = {**wanted, "counts": counts,
                "files": {rel: sha256_file(root / rel) for rel in files},
                "images": {s: hashlib.sha256(text.encode()).hexdigest() for s, text in image_lists.items()}}
    (root / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (root / PARTIAL).unlink()
    return root


def _render_all(root: Path, seed: int, items: dict[str, list[Item]], workers: int | None,
                progress: bool) -> dict[tuple[str, int], tuple[int, int, str]]:
    """Draw every image in chunks, in worker processes for big runs; (split, index) -> (w, h, sha256)."""
    jobs = []
    for split in SPLITS:
        folder = root / IMAGE_DIRS[split]
        folder.mkdir(parents=True)
        jobs += [(folder, seed, items[split][k:k + 200]) for k in range(0, len(items[split]), 200)]
    total = sum(len(v) for v in items.values())
    if workers is None:  # small runs are faster without starting processes
        workers = 1 if total < 1000 else min(8, os.cpu_count() or 1)
    results = {}
    pool = Pool(workers) if workers > 1 else None
    try:
        with progress_bar(total=total, desc="demo images", unit="img", show=progress) as bar:
            for job, done in zip(jobs, pool.imap(_render, jobs) if pool else map(_render, jobs)):
                for index, w, h, digest in done:
                    results[job[2][0].split, index] = (w, h, digest)
                bar.update(len(done))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return results


def _write_texts(root: Path, items: dict[str, list[Item]], results: dict) -> list[str]:
    """Label, query, GT and truth files; returns their paths relative to root."""
    for split in ("train", "val", "corpus"):
        _write_lines(root / TEXT_FILES[split], [f"{i.image}${i.attribute}${i.text}" for i in items[split]])
    test = items["test"]  # cars first, then persons, as the organisers' file
    _write_lines(root / TEXT_FILES["test"], [i.text for i in test])
    table = pd.DataFrame({"image": [i.image for i in test], "kind": [i.kind for i in test],
                          "attribute": [f"{i.colour} {i.brand} {i.type}" if i.kind == "car" else i.vector
                                        for i in test]})
    write_ground_truth(root / TEST_GT_FILE, [i.text for i in test], relevance_sets(table))
    (root / "truth").mkdir(exist_ok=True)
    for split in SPLITS:
        rows = [{**{k: v for k, v in asdict(i).items() if k in TRUTH_COLUMNS},
                 "width": results[split, i.index][0], "height": results[split, i.index][1]}
                for i in items[split]]
        pd.DataFrame(rows, columns=TRUTH_COLUMNS).to_csv(root / "truth" / f"{split}.csv", index=False,
                                                         lineterminator="\n")
    return [*TEXT_FILES.values(), TEST_GT_FILE, *(f"truth/{s}.csv" for s in SPLITS)]


def read_truth(root: str | Path, split: str) -> pd.DataFrame:
    """What was drawn in a split (empty strings for fields that do not apply to the kind)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(root) / "truth" / f"{split}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: generate the demo data first (make_demo_dataset)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return df.assign(boots=df["boots"] == "True").astype({"width": "int64", "height": "int64"})
