"""Where a model is good and where it is not: AP by person attribute and by car field."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib.data.attributes import PERSON_ATTRIBUTES
from lib.data.labels import person_vector


def person_attribute_ap(table: pd.DataFrame, ap: np.ndarray) -> pd.DataFrame:
    """Mean official AP of person queries by attribute bit set in the query image's vector; an
    attribute no query has gets no row (its mean is undefined), and is named in `.attrs["absent"]`."""
    persons = table["kind"].to_numpy() == "person"
    vectors = np.array([person_vector(a) for a in table["attribute"][persons]])
    vectors = vectors.reshape(-1, len(PERSON_ATTRIBUTES))
    ap_persons = np.asarray(ap)[persons]
    rows = [{"attribute": name, "queries": int(has.sum()),
             "map10_official": float(ap_persons[has == 1].mean())}
            for name, has in zip(PERSON_ATTRIBUTES, vectors.T) if has.any()]
    result = pd.DataFrame(rows, columns=["attribute", "queries", "map10_official"]).set_index("attribute")
    result.attrs["absent"] = [name for name, has in zip(PERSON_ATTRIBUTES, vectors.T) if not has.any()]
    return result


def car_field_ap(table: pd.DataFrame, ap: np.ndarray, field: str = "type") -> pd.DataFrame:
    """Mean official AP of car queries by a parsed field of their caption (empty: not named)."""
    cars = table["kind"].to_numpy() == "car"
    frame = pd.DataFrame({field: table[field][cars].replace("", "(not named)").fillna("(not named)"),
                          "ap": np.asarray(ap)[cars]})
    return frame.groupby(field)["ap"].agg(["count", "mean"]).rename(
        columns={"count": "queries", "mean": "map10_official"})
