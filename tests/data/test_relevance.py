"""lib.data.relevance: the organisers' relevance rule on the real val labels and by hand, the GT file."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.data import relevance
from lib.data.labels import LabelError
from tests.data import PERSON_TEXT, bits, write


def test_real_val_relevance(val):
    sets = relevance.relevance_sets(val)
    assert len(sets) == len(val)
    assert all(image in s for image, s in zip(val["image"], sets))
    sizes = np.array([len(s) for s in sets])
    person = (val["kind"] == "person").to_numpy()
    assert np.median(sizes[person]) == 66  # persons.md
    assert sizes[person].mean() == pytest.approx(104, abs=1)
    kinds = dict(zip(val["image"], val["kind"]))
    assert all({kinds[i] for i in s} == {kind} for s, kind in zip(sets, val["kind"]))


# --- relevance and ground truth -------------------------------------------------------------------
def test_relevance_hand_made_example():
    rows = [("c1.jpg", "white Audi."), ("c2.jpg", "white Audi"), ("c3.jpg", "red Audi."),
            ("c4.jpg", "Truck."),
            ("p1.jpg", bits(0, 2, 4)),      # female, adult, front
            ("p2.jpg", bits(0, 2, 4, 9)),   # the same with a handbag: covers p1
            ("p3.jpg", bits(2, 4)),         # male, adult, front: other gender
            ("p4.jpg", bits(0, 2, 5)),      # female, adult, side
            ("p5.jpg", bits(0, 2, 4)),      # same vector as p1
            ("p6.jpg", bits())]             # male, nothing else: any male covers it
    df = pd.DataFrame(rows, columns=["image", "attribute"])
    df["kind"] = ["car"] * 4 + ["person"] * 6
    assert relevance.relevance_sets(df) == [
        {"c1.jpg", "c2.jpg"}, {"c1.jpg", "c2.jpg"}, {"c3.jpg"}, {"c4.jpg"},
        {"p1.jpg", "p2.jpg", "p5.jpg"}, {"p2.jpg"}, {"p3.jpg"}, {"p4.jpg"},
        {"p1.jpg", "p2.jpg", "p5.jpg"}, {"p3.jpg", "p6.jpg"}]


def test_person_relevance_matrix_reads_float_vectors_and_all_of_64_attributes():
    # 0/1 vectors read as floats (a table column) are bits all the same; one int64 packs 64 attributes
    a, b, c = np.zeros(64), np.zeros(64), np.ones(64)
    a[[0, 63]] = b[0] = 1.0  # all three female; a has attribute 63, b not, c has every attribute
    matrix = relevance.person_relevance_matrix(np.stack([a, b, c]))
    assert matrix.tolist() == [[True, False, True], [True, True, True], [False, False, True]]


def test_ground_truth_round_trip(tmp_path):
    texts = ["A white Audi.", "A white Audi.", PERSON_TEXT]
    relevant = [{"b.jpg", "a.jpg"}, ["c.jpg"], {"000002.jpg", "000001.jpg", "000010.jpg"}]
    path = relevance.write_ground_truth(tmp_path / "gt" / "val_gt.txt", texts, relevant)
    assert path.read_text(encoding="utf-8").splitlines()[0] == "A white Audi.$a.jpg$b.jpg"
    assert relevance.read_ground_truth(path) == [
        ("A white Audi.", ["a.jpg", "b.jpg"]), ("A white Audi.", ["c.jpg"]),
        (PERSON_TEXT, ["000001.jpg", "000002.jpg", "000010.jpg"])]
    with pytest.raises(ValueError, match="query 1"):
        relevance.write_ground_truth(tmp_path / "x.txt", ["a", "b$c"], [{"a.jpg"}, {"b.jpg"}])
    with pytest.raises(ValueError, match="2 texts but 1"):
        relevance.write_ground_truth(tmp_path / "x.txt", ["a", "b"], [{"a.jpg"}])


@pytest.mark.parametrize("content, problem", [
    ("a$x.jpg\n$y.jpg\n", "val_gt.txt:2: empty query text"),
    ("a$x.jpg\nb$y.jpg$$z.jpg\n", "val_gt.txt:2: empty image name in field 3"),
    ("a$x.jpg\nb$y.jpg$y.jpg\n", "val_gt.txt:2: image name repeated: y.jpg"),
    ("a$x.jpg\nb$w.jpg$y.jpg$x.jpg$z.jpg$y.jpg$z.jpg\n", "val_gt.txt:2: image name repeated: y.jpg, z.jpg"),
    ("a$x.jpg\n\nb$y.jpg\n", "val_gt.txt:2: blank line before the end of the file"),
])
def test_read_ground_truth_errors(tmp_path, content, problem):
    with pytest.raises(LabelError) as err:
        relevance.read_ground_truth(write(tmp_path, content, "val_gt.txt"))
    assert str(err.value) == problem


def test_val_ground_truth_file(tmp_path, val):
    sets = relevance.relevance_sets(val)
    path = relevance.write_ground_truth(tmp_path / "val_gt.txt", val["text"].tolist(), sets)
    back = relevance.read_ground_truth(path)
    assert [t for t, _ in back] == val["text"].tolist()
    assert [set(names) for _, names in back] == sets
    assert all(names == sorted(names) for _, names in back)


@pytest.mark.parametrize("texts, relevant, problem", [
    (["a", ""], [{"a.jpg"}, {"b.jpg"}], "query 1 (0-based): text '' is empty or holds '$' or a line break"),
    (["a", "b$c"], [{"a.jpg"}, {"b.jpg"}],
     "query 1 (0-based): text 'b$c' is empty or holds '$' or a line break"),
    (["a\nb"], [{"a.jpg"}], "query 0 (0-based): text 'a\\nb' is empty or holds '$' or a line break"),
    (["a\rb"], [{"a.jpg"}], "query 0 (0-based): text 'a\\rb' is empty or holds '$' or a line break"),
    (["a", "b"], [{"a.jpg"}, {"b.jpg", "c\r.jpg"}],
     "query 1 (0-based): image name 'c\\r.jpg' is empty or holds '$' or a line break"),
    (["a", "b"], [{"a.jpg"}, {""}], "query 1 (0-based): image name '' is empty or holds '$' or a line break"),
])
def test_write_ground_truth_refuses_a_field_the_file_cannot_hold(tmp_path, texts, relevant, problem):
    """'$' separates the fields and a line break the queries: neither may be inside a text or a name."""
    with pytest.raises(ValueError) as err:
        relevance.write_ground_truth(tmp_path / "gt.txt", texts, relevant)
    assert str(err.value) == problem
    assert not (tmp_path / "gt.txt").exists()
