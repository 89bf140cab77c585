"""lib.augment.agreement: the completions against a truth table."""
from __future__ import annotations

import pandas as pd
import pytest

from lib.augment import agreement
from lib.data import labels
from tests import FIXTURES

FIELDS_ALL = ("colour", "brand", "type")


@pytest.fixture(scope="module")
def real_vocab() -> labels.CarVocabulary:
    """The vocabulary of the real val labels: 11 colours, 65 brands, 6 types."""
    return labels.build_car_vocabulary(labels.read_labels(FIXTURES / "val_label.txt"))


# --- checking the fills ---------------------------------------------------------------------------
def test_filled_accuracy_and_confusion():
    aug = pd.DataFrame({
        "image": ["a", "b", "c", "d", "e", "p"], "kind": ["car"] * 5 + ["person"],
        "colour": ["red", "red", "white", "", "", ""], "brand": ["Audi"] * 3 + ["", "", ""],
        "type": ["", "", "", "Truck", "Truck", ""],
        "filled_colour": ["", "", "", "red", "white", ""], "filled_brand": [""] * 6,
        "filled_type": ["Sedan", "SUV", "Sedan", "", "", ""]})
    truth = pd.DataFrame({"image": ["a", "b", "c", "d", "e", "p"], "kind": aug["kind"],
                          "colour": ["red", "red", "white", "white", "white", ""],
                          "brand": ["Audi"] * 5 + [""],
                          "type": ["Sedan", "Sedan", "SUV", "Truck", "Truck", ""]})
    acc = agreement.filled_accuracy(aug, truth).set_index("field")
    assert acc.loc["type", "filled"] == 3 and acc.loc["type", "accuracy"] == pytest.approx(1 / 3)
    assert acc.loc["type", "majority_value"] == "Truck" and acc.loc["type", "majority_accuracy"] == 0
    assert acc.loc["colour", "accuracy"] == 0.5 and acc.loc["colour", "majority_value"] == "red"
    assert acc.loc["colour", "majority_accuracy"] == 0.0 and list(acc.index) == ["colour", "type"]  # no brand
    m = agreement.confusion_matrix(aug, truth, "type")
    assert m.loc["Sedan"].tolist() == [1, 1] and m.loc["SUV"].tolist() == [0, 1]  # columns SUV, Sedan
    assert int(m.to_numpy().sum()) == 3 and list(m.columns) == ["SUV", "Sedan"]
    with pytest.raises(ValueError, match="no colour in the truth"):
        agreement.filled_accuracy(aug, truth[truth["image"] != "d"])


def test_the_accuracy_table_is_written_into_the_run(tmp_path):
    table = pd.DataFrame([{"field": "type", "filled": 3, "accuracy": 1 / 3, "majority_value": "Truck",
                           "majority_accuracy": 0.0, "chance": 0.5}])
    path = agreement.write_accuracy(table, tmp_path)
    assert path == tmp_path / agreement.ACCURACY_FILE
    pd.testing.assert_frame_equal(pd.read_csv(path), table)
