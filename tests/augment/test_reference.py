"""lib.augment.reference: the reference's augmented label files read, and used as the completions."""
from __future__ import annotations

import pandas as pd
import pytest

from lib.augment import attribute_augmentation, reference
from lib.data import labels
from lib.errors import KitError
from lib.eval.query_policy import strip_prefix
from tests import FIXTURES

FIELDS_ALL = ("colour", "brand", "type")
REFERENCE_VAL = FIXTURES / "a3r_val_car_captions.txt"  # the reference's augmented_ViT-bigG-14_val_label.txt


@pytest.fixture(scope="module")
def real_vocab() -> labels.CarVocabulary:
    """The vocabulary of the real val labels: 11 colours, 65 brands, 6 types."""
    return labels.build_car_vocabulary(labels.read_labels(FIXTURES / "val_label.txt"))


def _texts(caption, fields, vocab):
    return [t for t, _ in attribute_augmentation.candidates(caption, vocab, fields)]


def test_reference_completions_are_candidates(real_vocab):
    """Every one of the reference's 3,371 completions is one of our candidates (all fields allowed)
    and keeps the fields its caption had: same candidate space as the reference."""
    ref = reference.read_reference(FIXTURES / "a3r_val_car_captions.txt", real_vocab)
    assert len(ref) == 3371 and ref[list(FIELDS_ALL)].notna().all().all()
    assert ref.loc[ref["image"] == "nxyrwufnwj.jpg", ["brand", "type"]].values.tolist() == [
        ["Balong Heavy Truck", "Truck"]]
    by_caption = {}
    for row in ref.itertuples():
        if row.caption not in by_caption:
            texts = _texts(row.caption, FIELDS_ALL, real_vocab)
            by_caption[row.caption] = {strip_prefix(t) for t in texts}
        assert row.augmented in by_caption[row.caption], row


def test_read_reference_names_bad_line(tmp_path, real_vocab):
    path = tmp_path / "ref.txt"
    path.write_text("a.jpg$white Audi$This is a white Audi$white Audi Sedan\nb.jpg$white Audi$A white Audi\n")
    with pytest.raises(labels.LabelError, match="ref.txt:2"):
        reference.read_reference(path, real_vocab)



def test_the_reference_completes_the_real_val_captions(real_vocab, tmp_path):
    table = labels.read_labels(FIXTURES / "val_label.txt")  # 3,413 cars and 6,587 persons
    done = reference.complete(table, reference.read_reference(REFERENCE_VAL, real_vocab), real_vocab, "text")
    row = done.set_index("image").loc["kcbluaihml.jpg"]
    assert (row["original_text"], row["text"], row["filled_type"], row["filled_colour"]) == (
        "This is a white Audi.", "This is a white Audi Sedan.", "Sedan", "")
    persons = done[done["kind"] == "person"]
    assert (persons["text"] == persons["original_text"]).all() and len(persons) == 6587
    assert done.attrs["not_in_reference"] == 3413 - 3371  # its val file lacks 42 cars: kept as written
    cars = done[done["kind"] == "car"]
    assert (cars["text"] != cars["original_text"]).sum() == 3371


def test_split_files_are_found_by_their_split_and_must_be_one(tmp_path):
    (tmp_path / "augmented_ViT-bigG-14_train_label.txt").write_text("")
    assert reference.split_file(tmp_path, "train").name == "augmented_ViT-bigG-14_train_label.txt"
    with pytest.raises(KitError, match="expected one \\*val_label.txt there .* found 0"):
        reference.split_file(tmp_path, "val")


def test_a_reference_naming_an_image_twice_is_refused(real_vocab):
    ref = pd.DataFrame({"image": ["a.jpg", "a.jpg"], "colour": ["red", "blue"], "brand": [None, None],
                        "type": ["SUV", "SUV"]})
    table = pd.DataFrame({"image": ["a.jpg"], "kind": ["car"], "title": ["A SUV."]})
    with pytest.raises(KitError, match="names a.jpg twice"):
        reference.complete(table, ref, real_vocab, "title")
