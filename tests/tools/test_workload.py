"""tools.workload: what the speed figures are measured on and against."""
from __future__ import annotations

import cv2
import pandas as pd
from PIL import Image

from tools import workload


def test_make_images_draws_at_the_sizes_it_is_given(tmp_path):
    demo = workload.make_images(tmp_path / "demo", 3)
    assert [cv2.imread(str(p)).shape[:2] for p in demo] == [(72, 128), (128, 48), (128, 48)]
    sized = workload.make_images(tmp_path / "sized", 2, size=lambda i, rng: (30 + i, 20))
    assert [cv2.imread(str(p)).shape[:2] for p in sized] == [(20, 30), (20, 31)]


def test_captions_are_the_real_texts_in_a_fixed_order_cycling():
    real = [line for line in workload.REAL_CAPTIONS.read_text(encoding="utf-8").splitlines() if line]
    texts = workload.captions(len(real) + 2)
    assert texts == workload.captions(len(real) + 2) and sorted(texts[:len(real)]) == sorted(real)
    assert texts[len(real):] == texts[:2]


def test_pil_padding_centres_on_a_square_as_the_kit_pads():
    img = Image.new("RGB", (5, 2), (200, 10, 10))
    padded = workload.pil_pad_to_square(img, fill=7)
    assert padded.size == (5, 5)
    assert padded.getpixel((0, 0)) == (7, 7, 7)  # rows 0 and 4 are padding: offset (5 - 2) // 2 = 1
    assert padded.getpixel((0, 1)) == (200, 10, 10)
    assert padded.getpixel((4, 2)) == (200, 10, 10) and padded.getpixel((4, 3)) == (7, 7, 7)


def test_the_training_table_cycles_through_images_and_captions(tmp_path):
    images = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    table = pd.read_csv(workload.write_table(tmp_path / "t.csv", images, ["x", "y", "z"], rows=4))
    assert [p.rsplit("/", 1)[1] for p in table["filepath"]] == ["a.jpg", "b.jpg", "a.jpg", "b.jpg"]
    assert list(table["title"]) == ["x", "y", "z", "x"]
