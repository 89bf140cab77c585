"""Validation relevance (the organisers' rule) and the ground-truth file (`text$img1$img2...` a query).

Every val line is a query over the val images. Relevant to image i's query: a car image with i's
attribute (trailing period ignored); a person image with i's gender bit (index 0) and every bit that
is 1 in i's vector. Computed on distinct attributes (718 person vectors on the real val split)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lib.data.captions import strip_period
from lib.data.labels import LabelError, person_vector, read_lines
from lib.files import atomic_write_text


def _groups(keys: Sequence[str], images: Sequence[str]) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    for key, image in zip(keys, images):
        groups.setdefault(key, set()).add(image)
    return groups


def person_relevance_matrix(vectors: np.ndarray) -> np.ndarray:
    """relevant[a, b]: distinct vector b answers a query with vector a (gender equal, b covers a)."""
    v = np.asarray(vectors, dtype=np.int64)
    packed = v @ (1 << np.arange(v.shape[1], dtype=np.int64))  # bit k of the int = attribute k
    same_gender = v[:, None, 0] == v[None, :, 0]
    missing = packed[:, None] & ~packed[None, :]  # bits 1 in the query, 0 in the candidate
    return same_gender & (missing == 0)


def relevance_sets(df: pd.DataFrame) -> list[set[str]]:
    """One set of relevant image names per row of a labelled table (`image`, `attribute`, `kind`)."""
    kinds = df["kind"].tolist()
    images = df["image"].tolist()
    keys = [strip_period(a) if k == "car" else ",".join(map(str, person_vector(a)))
            for a, k in zip(df["attribute"], kinds)]
    car = _groups([k for k, kind in zip(keys, kinds) if kind == "car"],
                  [i for i, kind in zip(images, kinds) if kind == "car"])
    person = _groups([k for k, kind in zip(keys, kinds) if kind == "person"],
                     [i for i, kind in zip(images, kinds) if kind == "person"])
    answers = dict(car.items())  # a car key never looks like a person key (21 bits with commas)
    if person:
        distinct = list(person)
        matrix = person_relevance_matrix(np.array([[int(b) for b in k.split(",")] for k in distinct]))
        for a, key in enumerate(distinct):
            answers[key] = set().union(*(person[distinct[b]] for b in np.flatnonzero(matrix[a])))
    return [set(answers[key]) for key in keys]


def _check_field(value: str, what: str, q: int) -> None:
    if not value or "$" in value or "\n" in value or "\r" in value:
        raise ValueError(f"query {q} (0-based): {what} {value!r} is empty or holds '$' or a line break")


def write_ground_truth(path: str | Path, texts: Sequence[str],
                       relevant_lists: Sequence[Iterable[str]]) -> Path:
    """Write `text$img1$img2...` per query, in order, each query's images sorted by name."""
    if len(texts) != len(relevant_lists):
        raise ValueError(f"{len(texts)} texts but {len(relevant_lists)} relevant lists")
    lines = []
    for q, (text, names) in enumerate(zip(texts, relevant_lists)):
        _check_field(text, "text", q)
        names = sorted(set(names))
        for name in names:
            _check_field(name, "image name", q)
        lines.append("$".join([text, *names]))
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_ground_truth(path: str | Path) -> list[tuple[str, list[str]]]:
    """The GT file as (text, image names) per line, in order; `LabelError` with file:line if bad."""
    name = Path(path).name
    rows = []
    for number, line in enumerate(read_lines(path), start=1):
        text, *images = line.split("$")
        if not text.strip():
            raise LabelError(name, number, "empty query text")
        for k, image in enumerate(images, start=2):
            if not image.strip():
                raise LabelError(name, number, f"empty image name in field {k}")
        if len(set(images)) != len(images):
            repeated = sorted({i for i in images if images.count(i) > 1})
            raise LabelError(name, number, f"image name repeated: {', '.join(repeated)}")
        rows.append((text, images))
    return rows
