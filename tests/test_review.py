"""The best-result record: checksums refuse a changed file, submissions compare query by query."""
import json

import numpy as np
import pandas as pd
import pytest

from lib import review


def _submission(path, lists):
    path.write_text(json.dumps({"results": [{"text": f"q{i}", "image_names": names}
                                            for i, names in enumerate(lists)]}))
    return path


def test_checksums_pass_then_name_both_values_on_a_change(tmp_path):
    a = tmp_path / "submission.json"
    a.write_text("{}")
    review.write_checksums(tmp_path, [a])
    assert review.verify_checksums(tmp_path)["ok"].all()
    expected = review.sha256(a)
    a.write_text("{ }")
    with pytest.raises(review.ReviewError) as err:
        review.verify_checksums(tmp_path)
    assert expected in str(err.value) and review.sha256(a) in str(err.value)
    assert "submission.json" in str(err.value)


def test_a_missing_file_is_a_mismatch(tmp_path):
    a = tmp_path / "params.yaml"
    a.write_text("x: 1\n")
    review.write_checksums(tmp_path, [a])
    a.unlink()
    with pytest.raises(review.ReviewError, match="missing"):
        review.verify_checksums(tmp_path)


def test_compare_lists_only_the_differing_queries(tmp_path):
    names = [[f"{q}_{i}.jpg" for i in range(10)] for q in range(3)]
    stored = _submission(tmp_path / "a.json", names)
    assert review.compare_submissions(stored, _submission(tmp_path / "b.json", names)).empty
    changed = [names[0], names[1][::-1], names[2]]
    diff = review.compare_submissions(stored, _submission(tmp_path / "c.json", changed))
    assert list(diff["query"]) == [1]
    with pytest.raises(review.ReviewError, match="3 queries"):
        review.compare_submissions(stored, _submission(tmp_path / "d.json", names[:2]))


def test_person_attribute_ap_averages_queries_with_the_bit():
    vec = lambda *bits: ",".join("1" if i in bits else "0" for i in range(21))  # noqa: E731
    table = pd.DataFrame({"kind": ["person", "person", "car", "person"],
                          "attribute": [vec(0, 7), vec(7), "white Audi.", vec(0)]})
    ap = np.array([1.0, 0.5, 0.9, 0.0])
    by_attr = review.person_attribute_ap(table, ap)
    assert by_attr.loc["Hat", "map10_official"] == pytest.approx(0.75)  # queries 0 and 1
    assert by_attr.loc["Female", "map10_official"] == pytest.approx(0.5)  # queries 0 and 3
    assert by_attr.loc["Hat", "queries"] == 2 and np.isnan(by_attr.loc["Skirt&Dress", "map10_official"])


def test_car_field_ap_groups_unnamed_types():
    table = pd.DataFrame({"kind": ["car", "car", "car"], "type": ["SUV", "", "SUV"]})
    out = review.car_field_ap(table, np.array([1.0, 0.2, 0.0]))
    assert out.loc["SUV", "map10_official"] == pytest.approx(0.5)
    assert out.loc["(not named)", "queries"] == 1


def test_fresh_dir_never_deletes_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(review.ReviewError, match="not a quick-review output"):
        review.fresh_dir(foreign)
    out = review.fresh_dir(tmp_path / "out")
    (out / "x").write_text("old")
    assert not (review.fresh_dir(out) / "x").exists()


def test_promote_refuses_an_unfinished_run(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: demo\n")
    with pytest.raises(review.ReviewError, match="submission.json"):
        review.promote(tmp_path, review_dir=tmp_path / "record")
