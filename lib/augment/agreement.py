"""How good the attribute augmentation's completions are, against a truth: the demo generator's
(lib.demo.dataset.read_truth) or, on the real data, the reference's own completions (read_reference)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from lib.augment.attribute_augmentation import FIELDS
from lib.data.prepare import write_table


def _present(values: pd.Series) -> pd.Series:
    """True where a field has a value (None, NaN and "" mean absent, with or without keep_default_na)."""
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
    """Per field filled at least once, how many captions got it and how often it equals `truth` (one row
    per image: image, colour, brand, type); baselines: the value most frequent among the captions that
    state the field (ties: alphabetical), and `chance`, 1 / the number of values seen."""
    rows = []
    cars = augmented[augmented["kind"] == "car"]
    for field in FIELDS:
        joined = _joined(augmented, truth, field)
        if joined.empty:
            continue
        stated = cars.loc[_present(cars[field]), field].astype(str)
        counts = stated.value_counts()
        majority = min(counts[counts == counts.max()].index) if len(counts) else ""
        values = set(stated) | set(joined[field])
        right = joined[f"filled_{field}"] == joined[field]
        rows.append({"field": field, "filled": len(joined), "accuracy": right.mean(),
                     "majority_value": majority, "majority_accuracy": (joined[field] == majority).mean(),
                     "chance": 1 / len(values)})
    return pd.DataFrame(rows, columns=["field", "filled", "accuracy", "majority_value", "majority_accuracy",
                                       "chance"])


ACCURACY_FILE = "attribute_agreement.csv"


def write_accuracy(accuracy: pd.DataFrame, run_dir: str | os.PathLike) -> Path:
    """filled_accuracy's table into the run, for the record's figures."""
    return write_table(accuracy, Path(run_dir) / ACCURACY_FILE)


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
