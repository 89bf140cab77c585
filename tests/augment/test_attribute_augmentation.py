"""lib.augment.attribute_augmentation: candidates per missing-field case, a/an, the best candidate
chosen, each image and each distinct sentence encoded once, the model built once per run, persons
and complete captions untouched."""
from __future__ import annotations

import itertools
import json
import math
import types

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from lib import config
from lib.augment import attribute_augmentation as augment
from lib.data import labels
from lib.model import factory
from tests import FIXTURES

FIELDS_ALL = ("colour", "brand", "type")


@pytest.fixture(scope="module")
def real_vocab() -> labels.CarVocabulary:
    """The vocabulary of the real val labels: 11 colours, 65 brands, 6 types."""
    return labels.build_car_vocabulary(labels.read_labels(FIXTURES / "val_label.txt"))


SMALL = labels.CarVocabulary(colours=("orange", "red", "white"), brands=("Audi", "Balong Heavy Truck",
                                                                         "China-Moto", "Isuzu"),
                             types=("SUV", "Sedan", "Truck"))


def _texts(caption, fields, vocab=SMALL):
    return [t for t, _ in augment.candidates(caption, vocab, fields)]


def test_only_type_missing():
    cands = augment.candidates("This is a white Audi.", SMALL, ("colour", "type"))
    assert cands == [("This is a white Audi SUV.", {"type": "SUV"}),
                     ("This is a white Audi Sedan.", {"type": "Sedan"}),
                     ("This is a white Audi Truck.", {"type": "Truck"})]


def test_only_colour_missing_article_follows_new_first_word():
    assert _texts("A Audi Sedan.", ("colour", "type")) == [
        "An orange Audi Sedan.", "A red Audi Sedan.", "A white Audi Sedan."]


def test_only_brand_missing():
    assert _texts("This is an orange SUV", FIELDS_ALL) == [
        f"This is an orange {b} SUV" for b in SMALL.brands]  # no period in, none out


def test_colour_and_type_missing_bare_brand():
    cands = augment.candidates("A Balong Heavy Truck.", SMALL, ("colour", "type"))
    assert len(cands) == 3 * 3
    assert cands[0] == ("An orange Balong Heavy Truck SUV.", {"colour": "orange", "type": "SUV"})
    assert cands[-1] == ("A white Balong Heavy Truck Truck.", {"colour": "white", "type": "Truck"})


def test_all_but_brand_missing_bare_type():
    texts = _texts("A Truck.", FIELDS_ALL)
    assert len(texts) == 3 * 4
    assert texts[0] == "An orange Audi Truck." and texts[3] == "An orange Isuzu Truck."
    assert _texts("A Truck.", ("colour", "type")) == ["An orange Truck.", "A red Truck.", "A white Truck."]


def test_real_vocabulary_counts(real_vocab):
    assert len(_texts("This is a white Audi.", ("colour", "type"), real_vocab)) == 6
    assert len(_texts("A Hongyan.", ("colour", "type"), real_vocab)) == 11 * 6
    assert len(_texts("A Truck.", FIELDS_ALL, real_vocab)) == 11 * 65


def test_fields_restrict_what_is_filled():
    assert _texts("A Truck.", ("type",)) == []  # type present, colour not allowed
    assert _texts("A Balong Heavy Truck.", ("type",)) == [
        "A Balong Heavy Truck SUV.", "A Balong Heavy Truck Sedan.", "A Balong Heavy Truck Truck."]
    assert _texts("This is a white SUV.", ("brand",))[2] == "This is a white China-Moto SUV."
    assert _texts("A SUV.", ("brand",))[-1] == "An Isuzu SUV."
    with pytest.raises(ValueError) as bad:
        augment.candidates("A Truck.", SMALL, ("colour", "wheels"))
    assert str(bad.value) == "attribute fields may be colour, brand, type; got ['wheels']"


def test_nothing_missing_no_candidates():
    assert augment.candidates("This is a red Audi Sedan.", SMALL, FIELDS_ALL) == []


def test_a_period_followed_by_trailing_whitespace_is_kept():
    assert _texts("A Truck. ", ("colour", "type")) == ["An orange Truck.", "A red Truck.", "A white Truck."]
    assert _texts("This is a white Audi.\n", ("type",))[0] == "This is a white Audi SUV."


# --- scoring with fixed embeddings ----------------------------------------------------------------
def _table(tmp_path) -> pd.DataFrame:
    rows = [("car1.png", "This is a white Audi.", "car"), ("car2.png", "A Balong Heavy Truck.", "car"),
            ("car1.png", "This is a white Audi.", "car"),  # same image again: encoded once
            ("p.png", "A female pedestrian is someone who walks on foot.", "person"),
            ("car3.png", "This is a red Audi Sedan.", "car"), ("car4.png", "This is a white Audi.", "car")]
    return pd.DataFrame({"filepath": [str(tmp_path / f) for f, _, _ in rows],
                         "title": [t for _, t, _ in rows],
                         "image": [f for f, _, _ in rows], "kind": [k for _, _, k in rows],
                         "colour": ["", "", "", "", "red", ""]})


class FakeEncoders:
    """Images and sentences as fixed unit vectors: car1 is nearest "This is a white Audi Truck.",
    car2 "A red Balong Heavy Truck SUV."; car4 has equal scores for all (ties: first candidate).
    Records every call."""

    WANT = {"car1.png": ("This is a white Audi Truck.", "This is a white Audi Sedan."),
            "car2.png": ("A red Balong Heavy Truck SUV.", "A white Balong Heavy Truck Truck.")}

    def __init__(self, monkeypatch):
        self.image_calls, self.text_calls, self.image_kw, self.text_kw = [], [], [], []
        monkeypatch.setattr(augment, "encode_images", self.images)
        monkeypatch.setattr(augment, "encode_texts", self.texts)

    def images(self, model, paths, preprocess_cfg, **kw):
        self.image_calls.append([p.name for p in paths])
        self.image_kw.append(kw)
        return torch.tensor([[1.0, 0, 0] if p.name == "car1.png" else [0, 1.0, 0] if p.name == "car2.png"
                             else [0, 0, 1.0] for p in paths])

    def texts(self, model, tokenizer, texts, **kw):
        self.text_calls.append(list(texts))
        self.text_kw.append(kw)
        vecs = []
        for t in texts:
            v = [0.0, 0.0, 0.5]  # car4 (axis 2) scores 0.5 for every sentence
            for axis, (best, second) in enumerate(self.WANT.values()):
                v[axis] = 0.9 if t == best else 0.6 if t == second else 0.1
            vecs.append(v)
        return torch.tensor(vecs)


def test_best_candidate_chosen_and_encoders_called_once(tmp_path, monkeypatch):
    fake = FakeEncoders(monkeypatch)
    table = _table(tmp_path)
    out = augment.augment_captions(table, object(), None, None, SMALL, ("colour", "type"), progress=False)
    assert out["title"].tolist() == [
        "This is a white Audi Truck.", "A red Balong Heavy Truck SUV.", "This is a white Audi Truck.",
        table["title"][3], "This is a red Audi Sedan.", "This is a white Audi SUV."]
    assert out["original_title"].tolist() == table["title"].tolist()
    assert list(out.columns) == ["filepath", "title", "original_title", "image", "kind", "colour",
                                 "filled_colour", "filled_brand", "filled_type", "margin"]
    assert out["filled_type"].tolist() == ["Truck", "SUV", "Truck", "", "", "SUV"]
    assert out["filled_colour"].tolist() == ["", "red", "", "", "", ""]
    assert out["colour"].tolist() == table["colour"].tolist()  # the labels' own fields stay
    assert np.allclose(out["margin"].to_numpy()[[0, 1, 2, 5]], [0.3, 0.3, 0.3, 0.0])
    assert np.isnan(out["margin"][3]) and np.isnan(out["margin"][4])  # person; nothing missing
    # one call each; each image once; each distinct sentence once (3 Audi types + 3 colours x 3 types)
    assert fake.image_calls == [["car1.png", "car2.png", "car4.png"]]
    (texts,) = fake.text_calls
    assert len(texts) == len(set(texts)) == 3 + 9
    assert out.attrs["augment_stats"]["completed"] == 4


def _clock(monkeypatch, ticks):
    """The module's clock reads `ticks` in turn (a callable: read it as often as asked)."""
    now = ticks if callable(ticks) else iter(ticks).__next__
    monkeypatch.setattr(augment, "time", types.SimpleNamespace(perf_counter=now))


def test_stats_count_rows_and_time_each_pass(tmp_path, monkeypatch):
    FakeEncoders(monkeypatch)
    # start, before the images, after them, after the sentences, end
    _clock(monkeypatch, [10.0, 10.0625, 10.18595, 10.42051, 10.61234])
    out = augment.augment_captions(_table(tmp_path), object(), None, None, SMALL, ("type", "colour"),
                                   progress=False)
    # 6 rows, 5 cars, 4 completed (car3 has all); images car1, car2, car4; 3 + 3 x 3 sentences;
    # 0.61234 s in all: 3 / 0.61234 = 4.899 images a second
    assert out.attrs["augment_stats"] == {
        "rows": 6, "car_rows": 5, "completed": 4, "images": 3, "distinct_texts": 12, "seconds": 0.612,
        "image_seconds": 0.123, "text_seconds": 0.235, "images_per_s": 4.9, "fields": ["colour", "type"]}


def test_stats_with_nothing_to_complete_or_a_clock_that_did_not_move(tmp_path, monkeypatch):
    _clock(monkeypatch, [10.0, 10.5])
    out = augment.augment_captions(_table(tmp_path), None, None, None, SMALL, (), progress=False)
    assert out.attrs["augment_stats"] == {
        "rows": 6, "car_rows": 5, "completed": 0, "images": 0, "distinct_texts": 0, "seconds": 0.5,
        "image_seconds": 0.0, "text_seconds": 0.0, "images_per_s": None, "fields": []}
    FakeEncoders(monkeypatch)
    _clock(monkeypatch, lambda: 10.0)  # no time measured: no rate rather than a division by zero
    # (type only: the 3 white Audis and the Balong Heavy Truck)
    stats = augment.augment_captions(_table(tmp_path), object(), None, None, SMALL, ("type",),
                                     progress=False).attrs["augment_stats"]
    assert (stats["completed"], stats["seconds"], stats["image_seconds"], stats["images_per_s"]) == (
        4, 0.0, 0.0, None)


def test_encoder_settings_defaults_and_as_given(tmp_path, monkeypatch):
    fake = FakeEncoders(monkeypatch)
    augment.augment_captions(_table(tmp_path), object(), None, None, SMALL)
    # defaults: padded images, batches of 256, no worker processes, automatic precision, a progress bar
    assert fake.image_kw == [{"workers": 0, "pad": True, "batch_size": 256, "precision": "auto",
                              "progress": True}]
    assert fake.text_kw == [{"batch_size": 256, "precision": "auto", "progress": True}]
    augment.augment_captions(_table(tmp_path), object(), None, None, SMALL, padded=False, batch_size=5,
                             workers=2, precision="fp32", progress=False)
    assert fake.image_kw[1] == {"workers": 2, "pad": False, "batch_size": 5, "precision": "fp32",
                                "progress": False}
    assert fake.text_kw[1] == {"batch_size": 5, "precision": "fp32", "progress": False}


def test_table_checks_name_the_missing_columns_and_the_augmented_ones(tmp_path):
    table = _table(tmp_path)
    with pytest.raises(ValueError) as missing:
        augment.augment_captions(table.drop(columns="kind"), None, None, None, SMALL, (), progress=False)
    assert str(missing.value) == "augmentation needs columns filepath, kind, title; missing ['kind']"
    with pytest.raises(ValueError) as missing:
        augment.augment_captions(table, None, None, None, SMALL, (), column="text", progress=False)
    assert str(missing.value) == "augmentation needs columns filepath, kind, text; missing ['text']"
    with pytest.raises(ValueError) as clash:
        augment.augment_captions(table.assign(margin=0.0), None, None, None, SMALL, (), progress=False)
    assert str(clash.value) == "table already has ['margin']: it looks augmented already (use train.csv)"


def test_single_candidate_margin_inf_and_persons_never_touched(tmp_path, monkeypatch):
    FakeEncoders(monkeypatch)
    one_type = labels.CarVocabulary(colours=("red",), brands=("Audi",), types=("Sedan",))
    out = augment.augment_captions(_table(tmp_path), object(), None, None, one_type, ("type",),
                                   progress=False)
    assert out["title"][0] == "This is a white Audi Sedan." and math.isinf(out["margin"][0])
    person = _table(tmp_path).iloc[[3]].assign(title="A pedestrian with a red Audi")
    out = augment.augment_captions(person, None, None, None, SMALL, FIELDS_ALL, progress=False)
    assert out["title"].tolist() == person["title"].tolist() and out["filled_colour"].tolist() == [""]


def test_no_fields_changes_nothing_and_needs_no_model(tmp_path):
    table = _table(tmp_path)
    out = augment.augment_captions(table, None, None, None, SMALL, (), progress=False)
    assert out["title"].tolist() == table["title"].tolist() and out["margin"].isna().all()
    with pytest.raises(ValueError, match="no model"):
        augment.augment_captions(table, None, None, None, SMALL, ("type",), progress=False)
    with pytest.raises(ValueError, match="augmented already"):
        augment.augment_captions(out, None, None, None, SMALL, (), progress=False)


# --- a run with the real (micro) model ------------------------------------------------------------
def _run_dir(tmp_path):
    """A prepared run folder: 3 car lines, 1 person line, with tiny images."""
    data = tmp_path / "run" / "data"
    data.mkdir(parents=True)
    rows = [("aaaa.jpg", "white Audi.", "This is a white Audi.", "car", "white", "Audi", ""),
            ("bbbb.jpg", "Truck.", "A Truck.", "car", "", "", "Truck"),
            ("cccc.jpg", "red Audi Sedan.", "This is a red Audi Sedan.", "car", "red", "Audi", "Sedan"),
            ("000001.jpg", ",".join("0" * 21), "A male pedestrian.", "person", "", "", "")]
    for i, (name, *_) in enumerate(rows):
        img = np.random.default_rng(i).integers(0, 256, (20, 36, 3), dtype=np.uint8)
        assert cv2.imwrite(str(data / name), img)
    train = pd.DataFrame(rows, columns=["image", "attribute", "title", "kind", "colour", "brand", "type"])
    train.insert(0, "filepath", [str(data / n) for n in train["image"]])
    train["line"] = range(1, 5)
    train.to_csv(data / "train.csv", index=False)
    train.assign(text=train["title"]).to_csv(data / "val.csv", index=False)  # val queries: `text`
    pd.DataFrame({"text": ["This is a red Audi Sedan."], "kind": ["car"], "line": [1]}).to_csv(
        data / "test_queries.csv", index=False)
    train[["filepath", "image"]].to_csv(data / "test_gallery.csv", index=False)
    vocab = {"colours": list(SMALL.colours), "brands": list(SMALL.brands), "types": list(SMALL.types)}
    (data / "vocabulary.json").write_text(json.dumps(vocab))
    return tmp_path / "run"


def test_augment_run_builds_model_once_and_is_deterministic(tmp_path, monkeypatch):
    built = []
    real = factory.create_model

    def spy(*args, **kwargs):
        built.append(args)
        torch.manual_seed(0)  # random init, the same each time
        return real(*args, **kwargs)

    monkeypatch.setattr(factory, "create_model", spy)
    cfg = config.load("demo", model="kit-micro-vit", pretrained="", device="cpu", workers=0,
                      eval_batch_size=1, attribute_fields=["colour", "brand", "type"],
                      car_caption_form="sentence")
    run = _run_dir(tmp_path)
    out = augment.augment_run(cfg, run, progress=False)
    assert len(built) == 1  # once per run, whatever the number of batches (1 image a batch here)
    written = run / "data" / "train_augmented.csv"
    first = written.read_bytes()
    back = pd.read_csv(written, keep_default_na=False)
    assert back["title"].tolist() == out["title"].tolist()
    assert out["title"][0].startswith("This is a") and out["filled_type"][0] in SMALL.types
    assert out["filled_colour"][1] and out["filled_brand"][1] and not out["filled_type"][1]
    assert out["title"][2:].tolist() == ["This is a red Audi Sedan.", "A male pedestrian."]
    augment.augment_run(cfg, run, progress=False)
    assert written.read_bytes() == first and len(built) == 2

    off = augment.augment_run(cfg.replace(attribute_augmentation=False), run, progress=False)
    assert len(built) == 2 and off["title"].tolist() == off["original_title"].tolist()




def test_the_reference_caption_form_is_colour_brand_type_without_prefix_or_period():
    table = pd.DataFrame({"kind": ["car", "car", "car", "person"],
                          "title": ["This is a white Audi Sedan.", "A Truck.", "An orange Honda SUV.",
                                    "A male pedestrian."]})
    vocab = labels.CarVocabulary(colours=("orange", "white"), brands=("Audi", "Honda"),
                                 types=("SUV", "Sedan"))
    out = augment.caption_form(table, vocab, "attributes", "title")
    assert out["title"].tolist() == ["white Audi Sedan", "Truck", "orange Honda SUV", "A male pedestrian."]
    assert augment.caption_form(table, vocab, "sentence", "title") is table


def test_augment_run_as_the_reference_completes_val_in_its_form_on_unpadded_images(tmp_path, monkeypatch):
    padded = []
    monkeypatch.setattr(augment, "encode_images", lambda model, paths, pp, **kw: (
        padded.append(kw["pad"]) or torch.nn.functional.normalize(torch.ones(len(paths), 4), dim=-1)))
    monkeypatch.setattr(augment, "encode_texts", lambda model, tok, texts, **kw: (
        torch.nn.functional.normalize(torch.ones(len(texts), 4), dim=-1)))
    monkeypatch.setattr(augment, "model_from_config", lambda cfg: (object(), None, None))
    cfg = config.load("competition", workers=0)  # the reference's steps
    run = _run_dir(tmp_path)
    train = augment.augment_run(cfg, run, progress=False)
    val = pd.read_csv(run / "data" / "val_augmented.csv", keep_default_na=False)
    assert padded == [False, False]  # train, then val: scored unpadded, as augment.py:130
    # equal scores everywhere: the first candidate of each (types SUV, Sedan, Truck; colours orange, ...)
    assert train["title"].tolist() == ["white Audi SUV", "orange Audi Truck", "red Audi Sedan",
                                       "A male pedestrian."]
    assert val["text"][0] == "white Audi SUV" and train["filled_brand"][1] == "Audi"  # brand filled too
    assert val["original_text"][0] == "This is a white Audi."
    augment.augment_run(cfg.replace(augment_val=False), run, progress=False)
    assert not (run / "data" / "val_augmented.csv").exists()  # val as written again


def test_augment_run_passes_the_run_settings_and_reports_each_split(tmp_path, monkeypatch, capsys):
    fake = FakeEncoders(monkeypatch)  # no image is car1/car2: every score ties, first candidates win
    monkeypatch.setattr(augment, "model_from_config", lambda cfg: (object(), None, None))
    _clock(monkeypatch, itertools.count(10.0, 0.3).__next__)  # 4 ticks of 0.3 s a split
    cfg = config.load("competition", workers=3, eval_batch_size=7, precision="fp32")
    run = _run_dir(tmp_path)
    train = augment.augment_run(cfg, run)
    assert train["title"].tolist() == ["white Audi SUV", "orange Audi Truck", "red Audi Sedan",
                                       "A male pedestrian."]
    # train, then val; a progress bar by default
    settings = {"batch_size": 7, "precision": "fp32", "progress": True}
    assert fake.image_kw == [{"workers": 3, "pad": False, **settings}] * 2
    assert fake.text_kw == [settings] * 2
    # the form "colour brand type" changes the complete caption too; 2 images, 3 + 3 x 4 sentences
    zero_shot = ("3 of 3 car captions changed (fields: colour, brand, type; zero-shot: 2 images and 15 "
                 "distinct sentences encoded in 1.2 s; form: attributes)")
    assert capsys.readouterr().out.splitlines() == [f"train: {zero_shot}", f"val: {zero_shot}"]

    augment.augment_run(cfg.replace(car_caption_form="sentence", augment_val=False), run, progress=False)
    assert fake.image_kw[-1]["progress"] is False and fake.text_kw[-1]["progress"] is False
    assert capsys.readouterr().out.splitlines() == [
        "train: 2 of 3 car captions changed (fields: colour, brand, type; zero-shot: 2 images and 15 "
        "distinct sentences encoded in 1.2 s; form: sentence)"]

    off = augment.augment_run(cfg.replace(attribute_augmentation=False), run, progress=False)
    assert len(fake.image_calls) == 3 and off["filled_type"].tolist() == [""] * 4
    assert capsys.readouterr().out.splitlines() == [
        f"{split}: 3 of 3 car captions changed (fields: none; no completion; form: attributes)"
        for split in ("train", "val")]


def test_augment_run_from_the_reference_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(augment, "model_from_config", lambda cfg: pytest.fail("no zero-shot pass"))
    refs = tmp_path / "reference"
    refs.mkdir()
    (refs / "augmented_ViT-bigG-14_train_label.txt").write_text(
        "aaaa.jpg$white Audi$This is a white Audi$white Audi SUV\nbbbb.jpg$Truck$A Truck$red Audi Truck\n")
    cfg = config.load("competition", workers=0, augmented_labels=str(refs), augment_val=False)
    train = augment.augment_run(cfg, _run_dir(tmp_path), progress=False)
    assert train["title"].tolist() == ["white Audi SUV", "red Audi Truck", "red Audi Sedan",
                                       "A male pedestrian."]
    assert train["filled_type"].tolist()[:2] == ["SUV", ""] and train["filled_brand"][1] == "Audi"
    # the red Audi Sedan (cccc.jpg) has no line there: its caption kept, only its form changed
    assert capsys.readouterr().out.splitlines() == [
        "train: 3 of 3 car captions changed (fields: colour, brand, type; from "
        "augmented_ViT-bigG-14_train_label.txt (1 cars not in it keep their caption); form: attributes)"]
