"""lib.data.prepare: the organisers' layout checked, the prepared tables written and read back."""
from __future__ import annotations

import pandas as pd
import pytest

from lib import config
from lib.data import prepare
from lib.data.images import TooManyBadImages
from lib.demo.dataset import make_demo_dataset

SIZES = dict(train_size=12, val_size=8, test_size=6, corpus_size=2)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("prep") / "data", seed=0, progress=False, **SIZES)


def test_a_missing_dataset_names_every_missing_file(tmp_path):
    cfg = config.load("competition", data_root=str(tmp_path))
    with pytest.raises(prepare.DatasetMissing, match="train/train_label.txt.*test/test_images"):
        prepare.check_dataset(cfg)


def test_prepare_writes_the_tables_and_reads_them_back(data_root, tmp_path):
    cfg = config.load("competition", data_root=str(data_root))
    prep = prepare.prepare(cfg, tmp_path / "run", progress=False)
    assert (len(prep.train), len(prep.val), len(prep.test_queries), len(prep.test_gallery)) == (12, 8, 6, 6)
    assert list(prep.test_gallery["image"]) == sorted(prep.test_gallery["image"])
    assert {"filepath", "title", "colour", "brand", "type"} <= set(prep.train.columns)
    assert (tmp_path / "run" / "data" / "val_gt.txt").read_text().count("\n") == 8
    back = prepare.load_prepared(tmp_path / "run")
    for name in ("train", "val", "test_queries", "test_gallery"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(prep, name).fillna(""), check_dtype=False)
    assert back.vocabulary == prep.vocabulary
    summary = prepare.summary(prep)
    assert summary.loc["train", "lines"] == 12 and summary.loc["test gallery", "lines"] == 6
    assert (summary.loc["train", "car"], summary.loc["test gallery", "car"]) == (
        int((prep.train["kind"] == "car").sum()), "–")  # counts as integers; the gallery has no kinds


def test_a_bad_image_stops_the_run_or_is_left_out_when_tolerated(data_root, tmp_path):
    cfg = config.load("competition", data_root=str(data_root))
    victim = sorted((data_root / "val" / "val_images").iterdir())[0]
    original = victim.read_bytes()
    try:
        victim.write_bytes(original[:100])
        with pytest.raises(TooManyBadImages, match=victim.name):
            prepare.prepare(cfg, tmp_path / "a", progress=False)
        prep = prepare.prepare(cfg.replace(max_bad_image_fraction=0.2), tmp_path / "b", progress=False)
        assert victim.name not in set(prep.val["image"]) and len(prep.val) == 7
        report = pd.read_csv(tmp_path / "b" / "data" / "bad_images_val.csv")
        assert report["image"].tolist() == [victim.name] and "truncated" in report["reason"][0]
    finally:
        victim.write_bytes(original)


def test_loading_a_run_without_tables_says_which_notebook_to_run(tmp_path):
    with pytest.raises(prepare.DatasetMissing, match="01_prepare"):
        prepare.load_prepared(tmp_path)
