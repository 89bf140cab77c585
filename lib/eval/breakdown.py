"""Where a model is good and where it is not: AP by person attribute and by car field."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib.data.attributes import PERSON_ATTRIBUTES
from lib.data.labels import person_vector


def person_attribute_ap(table: pd.DataFrame, ap: np.ndarray) -> pd.DataFrame:
    """Mean official AP of person queries by attribute bit set in the query image's vector."""
    persons = table["kind"].to_numpy() == "person"
    vectors = np.array([person_vector(a) for a in table["attribute"][persons]])
    vectors = vectors.reshape(-1, len(PERSON_ATTRIBUTES))
    ap_persons = np.asarray(ap)[persons]
    rows = [{"attribute": name, "queries": int(has.sum()),
             "map10_official": float(ap_persons[has == 1].mean()) if has.any() else np.nan}
            for name, has in zip(PERSON_ATTRIBUTES, vectors.T)]
    return pd.DataFrame(rows).set_index("attribute")


def car_field_ap(table: pd.DataFrame, ap: np.ndarray, field: str = "type") -> pd.DataFrame:
    """Mean official AP of car queries by a parsed field of their caption (empty: not named)."""
    cars = table["kind"].to_numpy() == "car"
    frame = pd.DataFrame({field: table[field][cars].replace("", "(not named)").fillna("(not named)"),
                          "ap": np.asarray(ap)[cars]})
    return frame.groupby(field)["ap"].agg(["count", "mean"]).rename(
        columns={"count": "queries", "mean": "map10_official"})
