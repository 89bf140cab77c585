"""lib.eval.scoring: the score table splits cars and persons; flat keys for metrics.jsonl and scores.json."""
import pytest

from lib.eval import metrics
from lib.eval.scoring import flat_metrics, score_table


def test_score_table_splits_cars_and_persons_by_kind():
    ranked = [["c1"] + ["x"] * 9, ["x", "c2"] + ["y"] * 8, ["x"] * 10, ["p1"] + ["x"] * 9]
    relevant = [{"c1"}, {"c2"}, {"p9"}, {"p1", "p2"}]
    kinds = ["car", "car", "person", "person"]
    table = score_table(ranked, relevant, kinds)
    assert list(table.index) == ["all", "car", "person"]
    assert list(table.columns) == list(metrics.SUMMARY_KEYS)
    assert table.loc["car", "map10_official"] == pytest.approx((1 + 0.5) / 2)
    assert table.loc["person", "map10_official"] == pytest.approx((0 + 1) / 2)
    assert table.loc["person", "map10_standard"] == pytest.approx((0 + 1 / 2) / 2)
    assert table.loc["all", "map10_official"] == pytest.approx(2.5 / 4)
    assert table.loc["car", "queries"] == 2 and table.loc["all", "recall@1"] == pytest.approx(0.5)
    assert table["queries"].dtype == "int64"  # a count shows as 2, not 2.0000
    only_cars = score_table(ranked[:2], relevant[:2], kinds[:2])
    assert list(only_cars.index) == ["all", "car"]


def test_flat_metrics_keys():
    table = score_table([["a"] * 10, ["b"] * 10], [{"a"}, {"c"}], ["car", "person"])
    flat = flat_metrics(table)
    assert flat["val_map10_official"] == 0.5 and flat["val_car_map10_official"] == 1.0
    assert flat["val_person_recall@10"] == 0.0 and "val_queries" not in flat
    assert set(flat_metrics(table, prefix="")) == {k.removeprefix("val_") for k in flat}
