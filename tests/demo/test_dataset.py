"""The demo dataset: the organisers' layout and formats, captions true to the images' truth,
the organisers' relevance in test_gt.txt, and byte-for-byte determinism."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import cv2
import pytest

from lib.data.attributes import CAR_TYPES
from lib.data.labels import query_kind, read_labels, read_queries
from lib.data.relevance import read_ground_truth
from lib.demo import captions as dc
from lib.demo import dataset as demo_data
from tests.demo import bits, check_caption_against_truth

SMOKE = dict(train_size=60, val_size=30, test_size=30, corpus_size=120)
PREFIXES = ("This is an ", "This is a ", "An ", "A ")
CAR_NAME = re.compile(r"[a-z]{10}\.jpg")
PERSON_NAME = re.compile(r"\d{6}\.jpg")
TEST_CAR_NAME = re.compile(r"vehicle_\d{7}\.jpg")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return demo_data.make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", seed=0, progress=False,
                                       **SMOKE)


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def split_prefix(text: str) -> tuple[str, str]:
    prefix = next(p for p in PREFIXES if text.startswith(p))
    return prefix, text[len(prefix):]


# --- layout and formats ---------------------------------------------------------------------------
def test_layout_counts_and_manifest(root):
    for rel in ("train/train_label.txt", "val/val_label.txt", "test/test_text.txt", "test/test_gt.txt",
                "corpus/corpus_label.txt", "truth/train.csv", "MANIFEST.json"):
        assert (root / rel).is_file(), rel
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert manifest["seed"] == 0 and manifest["sizes"] == {k[:-5]: v for k, v in SMOKE.items()}
    for split, n in manifest["sizes"].items():
        images = sorted(p.name for p in (root / f"{split}/{split}_images").iterdir())
        assert len(images) == n
        truth = demo_data.read_truth(root, split)
        assert sorted(truth["image"]) == images
        counts = truth["kind"].value_counts()
        assert dict(counts) == manifest["counts"][split]
    assert 0.25 < manifest["counts"]["train"]["car"] / SMOKE["train_size"] < 0.42  # about 1 car : 2 persons
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel


def test_image_names_follow_the_organisers_patterns_and_are_unique(root):
    everything = []
    for split in demo_data.SPLITS:
        truth = demo_data.read_truth(root, split)
        for name, kind in zip(truth["image"], truth["kind"]):
            pattern = (TEST_CAR_NAME if split == "test" else CAR_NAME) if kind == "car" else PERSON_NAME
            assert pattern.fullmatch(name), (split, name)
        everything += list(truth["image"])
    assert len(everything) == len(set(everything))
    persons = [n for n in everything if PERSON_NAME.fullmatch(n)]
    assert len(persons) == len(set(persons))


def test_label_files_pass_the_strict_reader_and_agree_with_the_truth(root):
    for split in ("train", "val", "corpus"):
        df = read_labels(root / f"{split}/{split}_label.txt")
        truth = demo_data.read_truth(root, split).set_index("image")
        assert list(df["kind"]) == sorted(df["kind"], key=lambda k: k != "car")  # cars first
        assert (df["kind"] == truth.loc[df["image"], "kind"].values).all()
        assert (df["attribute"] == truth.loc[df["image"], "attribute"].values).all()
        assert set(df["image"]) == {p.name for p in (root / f"{split}/{split}_images").iterdir()}


def test_car_lines_are_prefix_plus_attribute_in_the_real_forms(root):
    for split in ("train", "val", "corpus"):
        df = read_labels(root / f"{split}/{split}_label.txt")
        truth = demo_data.read_truth(root, split).set_index("image")
        for image, attribute, text in df.loc[df["kind"] == "car", ["image", "attribute", "text"]].values:
            t = truth.loc[image]
            prefix, rest = split_prefix(text)
            assert rest == attribute and attribute.endswith(".")
            body = attribute[:-1]
            assert ("an" in prefix.lower().split()) == (body[0] in "aeiou"), text  # "an orange", "a SUV"
            if split == "corpus":
                assert body == f"{t.colour} {t.brand} {t.type}"
            elif body in CAR_TYPES:
                assert body == t.type
            elif body == t.brand:
                assert body in dc.BARE_BRANDS
            else:
                assert body == f"{t.colour} {t.brand}" and t.brand not in dc.BARE_BRANDS


# --- persons --------------------------------------------------------------------------------------
def test_person_vectors_are_consistent_and_captions_say_what_the_bits_say(root):
    table = {"".join(map(str, row)) for row in dc.person_vector_table()[0]}
    for split in demo_data.SPLITS:
        truth = demo_data.read_truth(root, split)
        for vector, boots, text in truth.loc[truth["kind"] == "person", ["vector", "boots", "text"]].values:
            v = bits(vector)
            assert len(v) == 21 and sum(v[1:4]) == sum(v[4:7]) == sum(v[13:15]) == 1 and sum(v[15:19]) <= 1
            assert "".join(map(str, v)) in table  # drawn from the real validation vectors
            check_caption_against_truth(text, v, boots)


# --- test split: queries and ground truth ---------------------------------------------------------
def test_queries_one_per_gallery_image_cars_first_and_complete(root):
    queries = read_queries(root / "test/test_text.txt")
    truth = demo_data.read_truth(root, "test")
    assert len(queries) == len(truth) == SMOKE["test_size"]
    kinds = list(queries["kind"])
    assert kinds == sorted(kinds, key=lambda k: k != "car") and {"car", "person"} <= set(kinds)
    assert kinds == list(truth["kind"])
    for text, t in zip(queries["text"], truth.itertuples()):
        assert query_kind(text) == t.kind
        if t.kind == "car":
            assert split_prefix(text)[1] == f"{t.colour} {t.brand} {t.type}."
        else:
            check_caption_against_truth(text, bits(t.vector), t.boots)
    assert set(truth["domain"]) == {"surveillance"}
    assert set(demo_data.read_truth(root, "train")["domain"]) == {"web"}


def test_ground_truth_follows_the_organisers_relevance_rule(root):
    truth = demo_data.read_truth(root, "test")
    gt = read_ground_truth(root / "test/test_gt.txt")
    assert [text for text, _ in gt] == (root / "test/test_text.txt").read_text().splitlines()
    rows = list(truth.itertuples())
    for (text, relevant), q in zip(gt, rows):
        if q.kind == "car":
            expected = [r.image for r in rows if r.kind == "car" and (r.colour, r.brand, r.type)
                        == (q.colour, q.brand, q.type)]
        else:
            qv = bits(q.vector)
            expected = [r.image for r in rows if r.kind == "person" and (
                r.vector == q.vector or (bits(r.vector)[0] == qv[0]
                                         and all(b for a, b in zip(qv, bits(r.vector)) if a)))]
        assert relevant == sorted(expected) and q.image in relevant


# --- images ---------------------------------------------------------------------------------------
def test_cars_are_wide_and_persons_tall(root):
    for split in demo_data.SPLITS:
        truth = demo_data.read_truth(root, split)
        cars, persons = truth[truth["kind"] == "car"], truth[truth["kind"] == "person"]
        assert (cars["width"] > 1.25 * cars["height"]).all()
        assert (persons["height"] > 2 * persons["width"]).all()
    truth = demo_data.read_truth(root, "val")
    for row in truth.iloc[[0, -1]].itertuples():
        img = cv2.imread(str(root / "val/val_images" / row.image))
        assert img.shape == (row.height, row.width, 3)


def test_surveillance_images_are_noisier_than_web_images(root):
    """Web images are flat colour areas with sharp edges; surveillance ones carry noise everywhere."""
    def flat_share(split: str) -> float:
        names = demo_data.read_truth(root, split)["image"][:10]
        imgs = [cv2.imread(str(root / f"{split}/{split}_images" / n), cv2.IMREAD_GRAYSCALE) for n in names]
        return sum(float((abs(cv2.Laplacian(i, cv2.CV_32F)) < 2).mean()) for i in imgs) / len(imgs)

    assert flat_share("train") > flat_share("test") + 0.2


# --- determinism and reuse ------------------------------------------------------------------------
def test_same_seed_same_bytes_whatever_the_workers(root, tmp_path):
    other = demo_data.make_demo_dataset(tmp_path / "again", seed=0, progress=False, workers=2, **SMOKE)
    assert file_hashes(other) == file_hashes(root)
    third = demo_data.make_demo_dataset(tmp_path / "seed1", seed=1, progress=False, **SMOKE)
    assert (third / "train/train_label.txt").read_bytes() != (root / "train/train_label.txt").read_bytes()


def test_second_call_is_a_no_op_and_new_parameters_regenerate(tmp_path):
    root = demo_data.make_demo_dataset(tmp_path / "d", seed=0, progress=False, **SMOKE)
    (root / "foundation").mkdir()  # something else under root survives a regeneration
    label = root / "train/train_label.txt"
    stamp = label.stat().st_mtime_ns
    demo_data.make_demo_dataset(root, seed=0, progress=False, **SMOKE)
    assert label.stat().st_mtime_ns == stamp
    demo_data.make_demo_dataset(root, seed=0, progress=False, **{**SMOKE, "val_size": 12})
    assert len(list((root / "val/val_images").iterdir())) == 12
    assert len(read_labels(root / "val/val_label.txt")) == 12
    assert (root / "foundation").is_dir() and not (root / demo_data.PARTIAL).exists()
    label.write_text("tampered\n")  # a damaged file is regenerated too
    demo_data.make_demo_dataset(root, seed=0, progress=False, **{**SMOKE, "val_size": 12})
    assert len(read_labels(label)) == SMOKE["train_size"]


def test_refuses_to_overwrite_a_dataset_it_did_not_write(tmp_path):
    (tmp_path / "real" / "train").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="refusing"):
        demo_data.make_demo_dataset(tmp_path / "real", seed=0, progress=False, **SMOKE)
    assert (tmp_path / "real" / "train").is_dir()
    with pytest.raises(ValueError, match="test_size"):
        demo_data.make_demo_dataset(tmp_path / "x", seed=0, progress=False, **{**SMOKE, "test_size": 1})
