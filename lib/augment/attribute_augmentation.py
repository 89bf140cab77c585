"""Attribute augmentation (A3R's step 2): each car caption lacking an allowed field gets the candidate
sentence its image is nearest to ("A Truck." -> "An orange FAW Truck."); parameters: docs/reference.md.

Unlike the reference (model rebuilt per batch, ~20 s an image), each image and each DISTINCT candidate
is encoded once, then scored by a dot product."""
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

from lib.augment import reference
from lib.config import Config
from lib.data.captions import compose_car_caption
from lib.data.labels import CarParts, CarVocabulary, parse_car_text
from lib.data.prepare import AUGMENTED_TABLE, VAL_AUGMENTED_TABLE, load_prepared, write_table
from lib.model.encode import encode_images, encode_texts
from lib.model.factory import model_from_config
from lib.paths import resolve

FIELDS = ("colour", "brand", "type")
FILLED = tuple(f"filled_{f}" for f in FIELDS)
REQUIRED_COLUMNS = ("filepath", "kind")


def check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """The fields in canonical order, without repeats (Config has checked the names already)."""
    bad = [f for f in fields if f not in FIELDS]
    if bad:
        raise ValueError(f"attribute fields may be {', '.join(FIELDS)}; got {bad}")
    return tuple(f for f in FIELDS if f in fields)


def missing_fields(parts: CarParts, fields: Sequence[str], vocab: CarVocabulary) -> tuple[str, ...]:
    """The allowed fields the caption lacks and the vocabulary can fill."""
    values = field_values(vocab)
    return tuple(f for f in check_fields(fields) if getattr(parts, f) is None and values[f])


def field_values(vocab: CarVocabulary) -> dict[str, tuple[str, ...]]:
    return {"colour": vocab.colours, "brand": vocab.brands, "type": vocab.types}


def candidates(caption: str, vocab: CarVocabulary, fields: Sequence[str] = ("colour", "type")
               ) -> list[tuple[str, dict[str, str]]]:
    """(sentence, {field: value added}) for every completion of `caption`, prefix and period kept, in
    the order of the product of the missing fields' values (ties go to the first); [] if none needed."""
    parts = parse_car_text(caption, vocab)
    missing = missing_fields(parts, fields, vocab)
    if not missing:
        return []
    values, period = field_values(vocab), caption.rstrip().endswith(".")
    out = []
    for combo in itertools.product(*(values[f] for f in missing)):
        filled = dict(zip(missing, combo))
        full = {f: filled.get(f, getattr(parts, f)) for f in FIELDS}
        out.append((compose_car_caption(parts.prefix, full["colour"], full["brand"], full["type"], period),
                    filled))
    return out


def _check_table(table: pd.DataFrame, column: str) -> None:
    missing = [c for c in (*REQUIRED_COLUMNS, column) if c not in table.columns]
    if missing:
        raise ValueError(f"augmentation needs columns {', '.join((*REQUIRED_COLUMNS, column))}; "
                         f"missing {missing}")
    clash = [c for c in (f"original_{column}", *FILLED, "margin") if c in table.columns]
    if clash:
        raise ValueError(f"table already has {clash}: it looks augmented already (use train.csv)")


def augment_captions(table: pd.DataFrame, model: torch.nn.Module | None, tokenizer: Any,
                     preprocess_cfg: Any, vocab: CarVocabulary, fields: Sequence[str] = ("colour", "type"),
                     *, column: str = "title", padded: bool = True, batch_size: int = 256, workers: int = 0,
                     precision: str = "auto", progress: bool = True) -> pd.DataFrame:
    """The table with the car captions in `column` completed, `original_<column>` after it, and
    `filled_<field>` ("": none) and `margin` (best minus second-best cosine) at the end; counts and
    times in `attrs["augment_stats"]`. `model` may be None when no caption needs completing."""
    _check_table(table, column)
    fields = check_fields(fields)
    start, timing = time.perf_counter(), {"images": 0.0, "texts": 0.0}
    out = table.copy()
    titles = out[column].astype(str).tolist()
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
    paths = [resolve(p) for p in out["filepath"].astype(str)]
    images = list(dict.fromkeys(paths[i] for i in rows))
    new_titles, margins = list(titles), np.full(len(out), np.nan)
    filled = {f: [""] * len(out) for f in FIELDS}
    if rows:
        if model is None:
            raise ValueError(f"{len(rows)} car captions need completing but no model was given")
        opts = {"batch_size": batch_size, "precision": precision, "progress": progress}
        t0 = time.perf_counter()
        image_emb = encode_images(model, images, preprocess_cfg, workers=workers, pad=padded, **opts)
        t1 = time.perf_counter()
        text_emb = encode_texts(model, tokenizer, texts, **opts)
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
    out.insert(out.columns.get_loc(column) + 1, f"original_{column}", titles)
    out[column] = new_titles
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


def caption_form(table: pd.DataFrame, vocab: CarVocabulary, form: str, column: str) -> pd.DataFrame:
    """Car texts in `column` as "colour brand type" (form "attributes": the reference's training text),
    or as they are ("sentence")."""
    if form == "sentence":
        return table
    out = table.copy()
    cars = out["kind"] == "car"
    out.loc[cars, column] = [" ".join(w for w in (p.colour, p.brand, p.type) if w)
                             for p in (parse_car_text(t, vocab) for t in out.loc[cars, column].astype(str))]
    return out


def augment_run(cfg: Config, run_dir: str | os.PathLike, *, progress: bool = True) -> pd.DataFrame:
    """Complete the run's car captions into train_augmented.csv (and val_augmented.csv), atomically:
    later steps use them when they exist. Returns the train table."""
    prep = load_prepared(Path(run_dir), augmented=False)
    fields = check_fields(cfg.attribute_fields) if cfg.attribute_augmentation else ()
    model = tokenizer = preprocess_cfg = None
    if fields and not cfg.augmented_labels:
        model, tokenizer, preprocess_cfg = model_from_config(cfg)
    splits = [("train", prep.train, "title", AUGMENTED_TABLE)]
    if cfg.augment_val:
        splits.append(("val", prep.val, "text", VAL_AUGMENTED_TABLE))
    else:
        (prep.data_dir / VAL_AUGMENTED_TABLE).unlink(missing_ok=True)  # a previous setting's: val as written
    done = {}
    for split, table, column, name in splits:
        if fields and cfg.augmented_labels:
            ref = reference.read_reference(reference.split_file(cfg.path("augmented_labels"), split),
                                           prep.vocabulary)
            out = reference.complete(table, ref, prep.vocabulary, column)
            how = (f"from {reference.split_file(cfg.path('augmented_labels'), split).name} "
                   f"({out.attrs['not_in_reference']} cars not in it keep their caption)")
        else:
            out = augment_captions(table, model, tokenizer, preprocess_cfg, prep.vocabulary, fields,
                                   column=column, padded=cfg.augment_padded_images,
                                   batch_size=cfg.eval_batch_size, workers=cfg.workers,
                                   precision=cfg.precision, progress=progress)
            s = out.attrs["augment_stats"]
            how = (f"zero-shot: {s['images']} images and {s['distinct_texts']} distinct sentences encoded "
                   f"in {s['seconds']:.1f} s")
        out = caption_form(out, prep.vocabulary, cfg.car_caption_form, column)
        write_table(out, prep.data_dir / name)
        completed = int((out[column] != out[f"original_{column}"]).sum())
        print(f"{split}: {completed} of {int((out['kind'] == 'car').sum())} car captions changed "
              f"(fields: {', '.join(fields) or 'none'}; {how if fields else 'no completion'}; "
              f"form: {cfg.car_caption_form})")
        done[split] = out
    return done["train"]
