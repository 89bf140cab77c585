"""Zero-shot attribute augmentation of car captions (the reference solution's step 2).

Training captions name colour + brand ("This is a white Audi.", 84 %), a bare type ("A Truck.",
15 %) or a bare brand (1 %); test queries name all three. Each car caption missing an allowed field
gets the candidate sentence, from the product of the vocabulary's values for its missing fields,
that the foundation model finds nearest to its image ("A Truck." -> "An orange FAW Truck.").

Unlike the reference, which rebuilt the model for every batch (~20 s per image): the model is built
once per run, every image is encoded once (batched, lib.retrieval.encode_images) and every DISTINCT
candidate sentence once (captions share candidates), then each caption's candidates are scored by a
dot product. Persons, and captions with nothing allowed missing, are left as they are.

Output columns: the input's, `original_title` after `title` (`title` is the completed caption, what
training reads), then `filled_colour`, `filled_brand`, `filled_type` ("" when nothing was added) and
`margin` (best minus second-best cosine; inf with a single candidate, NaN when nothing was scored).
The `colour`/`brand`/`type` columns stay the labels' own (what the attribute says).
"""
from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lib import model as model_lib
from lib import prepare, prompts, retrieval
from lib.config import Config
from lib.labels import CarParts, CarVocabulary, parse_car_text

FIELDS = ("colour", "brand", "type")
FILLED = tuple(f"filled_{f}" for f in FIELDS)
REQUIRED_COLUMNS = ("filepath", "title", "kind")


def check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    bad = [f for f in fields if f not in FIELDS]
    if bad:
        raise ValueError(f"augment fields may be {', '.join(FIELDS)}; got {bad}")
    return tuple(f for f in FIELDS if f in fields)  # canonical order, no repeats


def missing_fields(parts: CarParts, fields: Sequence[str], vocab: CarVocabulary) -> tuple[str, ...]:
    """The allowed fields the caption lacks and the vocabulary can fill."""
    values = field_values(vocab)
    return tuple(f for f in check_fields(fields) if getattr(parts, f) is None and values[f])


def field_values(vocab: CarVocabulary) -> dict[str, tuple[str, ...]]:
    return {"colour": vocab.colours, "brand": vocab.brands, "type": vocab.types}


def candidates(caption: str, vocab: CarVocabulary, fields: Sequence[str] = ("colour", "type")
               ) -> list[tuple[str, dict[str, str]]]:
    """(sentence, {field: value added}) for every completion of `caption`; [] when none is needed.

    Sentences keep the caption's prefix (article fitted to the new first word) and its final period;
    order: the product of the missing fields' vocabularies, colour slowest (ties go to the first).
    """
    parts = parse_car_text(caption, vocab)
    missing = missing_fields(parts, fields, vocab)
    if not missing:
        return []
    values, period = field_values(vocab), caption.rstrip().endswith(".")
    out = []
    for combo in itertools.product(*(values[f] for f in missing)):
        filled = dict(zip(missing, combo))
        full = {f: filled.get(f, getattr(parts, f)) for f in FIELDS}
        out.append((prompts.compose_car_caption(parts.prefix, full["colour"], full["brand"], full["type"],
                                                period), filled))
    return out


def _check_table(table: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"augmentation needs columns {', '.join(REQUIRED_COLUMNS)}; missing {missing}")
    clash = [c for c in ("original_title", *FILLED, "margin") if c in table.columns]
    if clash:
        raise ValueError(f"table already has {clash}: it looks augmented already (use train.csv)")


def augment_captions(table: pd.DataFrame, model: torch.nn.Module | None, tokenizer: Any,
                     preprocess_cfg: Any, vocab: CarVocabulary, fields: Sequence[str] = ("colour", "type"),
                     *, batch_size: int = 256, workers: int = 0, precision: str = "auto",
                     progress: bool = True) -> pd.DataFrame:
    """The table with its car captions completed (see the module docstring for the columns).

    `out.attrs["augment_stats"]`: rows completed, images and distinct texts encoded, seconds (all,
    encoding images, encoding texts), images/s (all images over all seconds). The model is only
    used when some caption needs completing (it may be None otherwise).
    """
    _check_table(table)
    fields = check_fields(fields)
    start, timing = time.perf_counter(), {"images": 0.0, "texts": 0.0}
    out = table.copy()
    titles = out["title"].astype(str).tolist()
    by_title: dict[str, list[tuple[str, dict[str, str]]]] = {}
    rows = []  # rows to complete
    for i, (title, kind) in enumerate(zip(titles, out["kind"])):
        if kind != "car":
            continue
        if title not in by_title:
            by_title[title] = candidates(title, vocab, fields)
        if by_title[title]:
            rows.append(i)
    texts = list(dict.fromkeys(t for i in rows for t, _ in by_title[titles[i]]))
    paths = [prepare.resolve(p) for p in out["filepath"].astype(str)]
    images = list(dict.fromkeys(paths[i] for i in rows))
    new_titles, margins = list(titles), np.full(len(out), np.nan)
    filled = {f: [""] * len(out) for f in FIELDS}
    if rows:
        if model is None:
            raise ValueError(f"{len(rows)} car captions need completing but no model was given")
        opts = {"batch_size": batch_size, "precision": precision, "progress": progress}
        t0 = time.perf_counter()
        image_emb = retrieval.encode_images(model, images, preprocess_cfg, workers=workers, **opts)
        t1 = time.perf_counter()
        text_emb = retrieval.encode_texts(model, tokenizer, texts, **opts)
        timing = {"images": t1 - t0, "texts": time.perf_counter() - t1}
        image_row = {p: j for j, p in enumerate(images)}
        text_row = {t: j for j, t in enumerate(texts)}
        groups: dict[str, list[int]] = {}
        for i in rows:
            groups.setdefault(titles[i], []).append(i)
        for title, members in groups.items():  # one matrix product per distinct caption
            cands = by_title[title]
            scores = (image_emb[[image_row[paths[i]] for i in members]]
                      @ text_emb[[text_row[t] for t, _ in cands]].T).numpy()
            best = scores.argmax(axis=1)  # first maximum: ties go to the earlier candidate
            top2 = -np.sort(-scores, axis=1)[:, :2]
            for i, b, pair in zip(members, best, top2):
                new_titles[i] = cands[b][0]
                margins[i] = pair[0] - pair[1] if len(pair) > 1 else math.inf
                for f, value in cands[b][1].items():
                    filled[f][i] = value
    out.insert(out.columns.get_loc("title") + 1, "original_title", titles)
    out["title"] = new_titles
    for f in FIELDS:
        out[f"filled_{f}"] = filled[f]
    out["margin"] = margins
    seconds = time.perf_counter() - start
    out.attrs["augment_stats"] = {
        "rows": len(out), "car_rows": int((out["kind"] == "car").sum()), "completed": len(rows),
        "images": len(images), "distinct_texts": len(texts), "seconds": round(seconds, 3),
        "image_seconds": round(timing["images"], 3), "text_seconds": round(timing["texts"], 3),
        "images_per_s": round(len(images) / seconds, 2) if images and seconds > 0 else None,
        "fields": list(fields)}
    return out


def _write_csv_atomically(df: pd.DataFrame, path: Path) -> None:
    """Training picks train_augmented.csv up when it exists: it must never be half written."""
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False, lineterminator="\n")
    os.replace(tmp, path)


def augment_run(cfg: Config, run_dir: str | os.PathLike, *, progress: bool = True) -> pd.DataFrame:
    """Complete the run's train.csv with the foundation model; write <run>/data/train_augmented.csv.

    Fields: cfg.augment_fields (none when cfg.augment is false: the table is written unchanged and no
    model is built). The model is built once, from cfg (model, pretrained, device).
    """
    prep = prepare.load_prepared(Path(run_dir))
    fields = check_fields(cfg.augment_fields) if cfg.augment else ()
    model = tokenizer = preprocess_cfg = None
    if fields:
        model, tokenizer, preprocess_cfg = model_lib.model_from_config(cfg)
    out = augment_captions(prep.train, model, tokenizer, preprocess_cfg, prep.vocabulary, fields,
                           batch_size=cfg.eval_batch_size, workers=cfg.workers, precision=cfg.precision,
                           progress=progress)
    _write_csv_atomically(out, prep.data_dir / "train_augmented.csv")
    s = out.attrs["augment_stats"]
    print(f"augmentation ({', '.join(fields) or 'off'}): {s['completed']} of {s['car_rows']} car captions "
          f"completed; {s['images']} images and {s['distinct_texts']} distinct sentences encoded in "
          f"{s['seconds']:.1f} s ({s['images_per_s'] or 0:.1f} images/s)")
    return out


# --- checking the completions (notebook) ------------------------------------------------------------
def _present(values: pd.Series) -> pd.Series:
    """True where a field has a value (None, NaN and "" mean absent, as in a table read with or
    without keep_default_na)."""
    return values.notna() & (values.astype(str).str.strip() != "")


def _joined(augmented: pd.DataFrame, truth: pd.DataFrame, field: str) -> pd.DataFrame:
    """The rows where `field` was filled, with the truth's value of that field beside them."""
    if truth["image"].duplicated().any():
        raise ValueError(f"truth has {int(truth['image'].duplicated().sum())} repeated image names")
    rows = augmented[_present(augmented[f"filled_{field}"])][["image", f"filled_{field}"]]
    joined = rows.merge(truth[["image", field]], on="image", how="left", validate="many_to_one")
    lost = joined[~_present(joined[field])]
    if len(lost):
        raise ValueError(f"{len(lost)} images with a filled {field} have no {field} in the truth, "
                         f"e.g. {lost['image'].iloc[0]!r}")
    return joined


def filled_accuracy(augmented: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Per field: how many captions got it filled and how often the fill equals the truth.

    `truth` has one row per image with columns image, colour, brand, type (the demo generator's
    truth/train.csv, or the reference's completions from `read_reference`). Baseline: always
    guessing the value most frequent among the captions that state the field (ties: first in
    alphabetical order), which needs no model; `chance` is 1 / the number of values seen.
    """
    rows = []
    cars = augmented[augmented["kind"] == "car"]
    for field in FIELDS:
        joined = _joined(augmented, truth, field)
        stated = cars.loc[_present(cars[field]), field].astype(str)
        counts = stated.value_counts()
        majority = min(counts[counts == counts.max()].index) if len(counts) else ""
        values = set(stated) | set(joined[field])
        n = len(joined)
        rows.append({"field": field, "filled": n,
                     "accuracy": (joined[f"filled_{field}"] == joined[field]).mean() if n else math.nan,
                     "majority_value": majority,
                     "majority_accuracy": (joined[field] == majority).mean() if n else math.nan,
                     "chance": 1 / len(values) if values else math.nan})
    return pd.DataFrame(rows)


def confusion_matrix(augmented: pd.DataFrame, truth: pd.DataFrame, field: str) -> pd.DataFrame:
    """Counts: truth value (rows) x filled value (columns), over the captions where `field` was filled."""
    if field not in FIELDS:
        raise ValueError(f"field must be one of {', '.join(FIELDS)}, got {field!r}")
    joined = _joined(augmented, truth, field)
    labels = sorted(set(joined[field]) | set(joined[f"filled_{field}"]))
    matrix = pd.crosstab(joined[field], joined[f"filled_{field}"]).reindex(
        index=labels, columns=labels, fill_value=0)
    matrix.index.name, matrix.columns.name = f"true {field}", f"filled {field}"
    return matrix.astype("int64")


def read_reference(path: str | os.PathLike, vocab: CarVocabulary) -> pd.DataFrame:
    """The reference's augmented captions (`image$attribute$caption$augmented`, lib's vocabulary)
    -> DataFrame[image, attribute, caption, augmented, colour, brand, type, line]."""
    from lib.labels import LabelError, read_lines

    name, rows = Path(path).name, []
    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split("$")
        if len(fields) != 4 or not all(f.strip() for f in fields):
            raise LabelError(name, number, f"expected 4 non-empty '$'-separated fields, got {len(fields)}")
        parts = parse_car_text(fields[3], vocab)
        rows.append((*fields, parts.colour, parts.brand, parts.type, number))
    return pd.DataFrame(rows, columns=["image", "attribute", "caption", "augmented", *FIELDS, "line"])
