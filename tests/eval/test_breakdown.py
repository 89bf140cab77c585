"""lib.eval.breakdown: AP by person attribute and by car type."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.eval import breakdown


def test_person_attribute_ap_averages_queries_with_the_bit():
    vec = lambda *bits: ",".join("1" if i in bits else "0" for i in range(21))  # noqa: E731
    table = pd.DataFrame({"kind": ["person", "person", "car", "person"],
                          "attribute": [vec(0, 7), vec(7), "white Audi.", vec(0)]})
    ap = np.array([1.0, 0.5, 0.9, 0.0])
    by_attr = breakdown.person_attribute_ap(table, ap)
    assert by_attr.loc["Hat", "map10_official"] == pytest.approx(0.75)  # queries 0 and 1
    assert by_attr.loc["Female", "map10_official"] == pytest.approx(0.5)  # queries 0 and 3
    assert by_attr.loc["Hat", "queries"] == 2 and by_attr["queries"].dtype == np.int64
    # an attribute no query has gets no row (no undefined mean), and is named
    assert "Skirt&Dress" not in by_attr.index and "Skirt&Dress" in by_attr.attrs["absent"]
    assert len(by_attr) + len(by_attr.attrs["absent"]) == 21


def test_car_field_ap_groups_unnamed_types():
    table = pd.DataFrame({"kind": ["car", "car", "car"], "type": ["SUV", "", "SUV"]})
    out = breakdown.car_field_ap(table, np.array([1.0, 0.2, 0.0]))
    assert out.loc["SUV", "map10_official"] == pytest.approx(0.5)
    assert out.loc["(not named)", "queries"] == 1
