"""lib.data.layout: the organisers' folder layout; image listings by suffix, sorted by name."""
from lib.data.layout import IMAGE_SUFFIXES, SPLIT_FILES, image_names


def test_image_names_are_sorted_and_filtered_by_suffix(tmp_path):
    for name in ("b.jpg", "a.PNG", "c.jpeg", "notes.txt", "d.bmp", ".hidden"):
        (tmp_path / name).write_bytes(b"x")
    assert image_names(tmp_path) == ["a.PNG", "b.jpg", "c.jpeg", "d.bmp"]
    assert {".jpg", ".jpeg", ".png", ".bmp"} == IMAGE_SUFFIXES


def test_the_three_splits_as_shipped():
    assert SPLIT_FILES["train"] == ("train/train_label.txt", "train/train_images")
    assert SPLIT_FILES["test"] == ("test/test_text.txt", "test/test_images")
