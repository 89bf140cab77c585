"""The reference's augmented label files (`augmented_labels`) as completions, instead of a zero-shot pass.

A3R's `data/augmented_ViT-bigG-14_{train,val}_label.txt` hold `image$attribute$caption$augmented` per
car, the fourth field the "colour brand type" its training read (parse_augment.py:18)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lib.data.captions import compose_car_caption
from lib.data.labels import CarVocabulary, LabelError, parse_car_text, read_lines
from lib.errors import KitError

FIELDS = ("colour", "brand", "type")


def read_reference(path: str | os.PathLike, vocab: CarVocabulary) -> pd.DataFrame:
    """A reference file -> DataFrame[image, attribute, caption, augmented, colour, brand, type, line]."""
    name, rows = Path(path).name, []
    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split("$")
        if len(fields) != 4 or not all(f.strip() for f in fields):
            raise LabelError(name, number, f"expected 4 non-empty '$'-separated fields, got {len(fields)}")
        parts = parse_car_text(fields[3], vocab)
        rows.append((*fields, parts.colour, parts.brand, parts.type, number))
    return pd.DataFrame(rows, columns=["image", "attribute", "caption", "augmented", *FIELDS, "line"])


def split_file(folder: str | os.PathLike, split: str) -> Path:
    found = sorted(Path(folder).glob(f"*{split}_label.txt"))
    if len(found) != 1:
        raise KitError(f"augmented_labels={folder}: expected one *{split}_label.txt there (the reference's "
                       f"augmented_ViT-bigG-14_{split}_label.txt), found {len(found)}")
    return found[0]


def complete(table: pd.DataFrame, reference: pd.DataFrame, vocab: CarVocabulary, column: str) -> pd.DataFrame:
    """The car captions in `column` completed as the reference did (prefix and period kept). A car it
    has no line for keeps its caption (`attrs["not_in_reference"]`: 42 of 3,413 in its val file)."""
    if reference["image"].duplicated().any():
        first = reference.loc[reference["image"].duplicated(), "image"].iloc[0]
        raise KitError(f"the reference's file names {first} twice: it cannot say which completion is meant")
    by_image = reference.set_index("image")
    out = table.copy()
    texts = out[column].astype(str).tolist()
    new, filled, missing = list(texts), {f: [""] * len(out) for f in FIELDS}, 0
    for i, (image, kind) in enumerate(zip(out["image"], out["kind"])):
        if kind != "car":
            continue
        if image not in by_image.index:
            missing += 1
            continue
        parts, done = parse_car_text(texts[i], vocab), by_image.loc[image]
        new[i] = compose_car_caption(parts.prefix, done["colour"], done["brand"], done["type"],
                                     texts[i].rstrip().endswith("."))
        for f in FIELDS:
            if getattr(parts, f) is None and done[f]:
                filled[f][i] = done[f]
    out.insert(out.columns.get_loc(column) + 1, f"original_{column}", texts)
    out[column] = new
    for f in FIELDS:
        out[f"filled_{f}"] = filled[f]
    out["margin"] = np.nan  # no scores: the reference's choice
    out.attrs["not_in_reference"] = missing
    return out
