"""The demo dataset: the organisers' layout and formats, captions true to the images' truth,
the organisers' relevance in test_gt.txt, and byte-for-byte determinism."""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import cv2
import pytest

from lib import demo_captions as dc
from lib import demo_data
from lib.labels import CAR_TYPES, query_kind, read_ground_truth, read_labels, read_queries

FIXTURES = Path(__file__).parent / "fixtures"
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


def bits(vector: str) -> list[int]:
    return [int(b) for b in vector.split(",")]


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


def test_car_attribute_forms_and_prefixes_have_the_real_shares():
    items = demo_data.plan_dataset(0, {"train": 6000, "val": 2, "test": 2, "corpus": 2})["train"]
    cars = [i for i in items if i.kind == "car"]
    forms = Counter("type" if i.attribute[:-1] in CAR_TYPES else "colour" if i.attribute[0].islower()
                    else "brand" for i in cars)
    assert 0.78 < forms["colour"] / len(cars) < 0.90
    assert 0.11 < forms["type"] / len(cars) < 0.19
    assert 0.005 < forms["brand"] / len(cars) < 0.03
    this_is = sum(i.text.startswith("This is") for i in cars) / len(cars)
    assert 0.45 < this_is < 0.56
    assert {i.brand for i in cars} == set(dc.CAR_BRANDS) and {i.type for i in cars} == set(CAR_TYPES)
    assert {i.colour for i in cars} == set(dc.CAR_COLOURS)
    assert any(" " in b for b in dc.CAR_BRANDS) and any("-" in b for b in dc.CAR_BRANDS)


# --- persons --------------------------------------------------------------------------------------
def decode_person_caption(text: str) -> dict:
    """What a caption says, read with persons.md's phrase list (independently of the generator)."""
    s1, s2 = text.split(". ", 1)
    said = {"female": s1.startswith(("A female", "A walking woman", "A pedestrian who is female"))}
    male = s1.startswith(("A male", "A walking man", "A pedestrian who is male"))
    assert said["female"] != male, text
    assert ("his " if said["female"] else "her ") not in s1, text
    assert s2.startswith("She is " if said["female"] else "He is "), text
    ages = {1: ("elderly", "60 or older", "least 60", "over 60"), 2: ("18-60", "between 18 and 60"),
            3: ("a minor", "18 or younger", "not an adult", "less than 18")}
    said["age"] = [k for k, words in ages.items() if any(w in s1 for w in words)]
    said["orientation"] = [k for k, w in ((4, "facing the camera"), (5, "standing sideways"),
                                          (6, "back to the camera")) if w in s1]
    said["item"] = [k for k, w in ((9, "handbag"), (10, "shoulder"), (11, "backpack"), (12, "holds objects"))
                    if w in s1]
    body = s2.split(" is ", 1)[1].rstrip(".")
    if body.startswith("wearning "):
        names = {"a hat": 7, "glasses": 8, "a longcoat": 19, "a coat that is long": 19, "boots": "boots"}
        said["accessories"] = [names[p] for p in body[len("wearning "):].split(",")]
    else:
        assert body.startswith("in "), text
        said["sleeve"] = [k for k, w in ((13, "short sleeve"), (14, "long sleeve")) if w in body]
        said["pattern"] = [k for k, w in ((15, "stripe"), (16, "logo"), (17, "plaid"), (18, "splice"))
                           if w in body]
        said["skirt"] = "skirt or dress" in body
    return said


def check_caption_against_truth(text: str, v: list[int], boots: bool) -> None:
    said = decode_person_caption(text)
    assert said["female"] == bool(v[0])
    assert said["age"] == [k for k in (1, 2, 3) if v[k]]
    assert said["orientation"] == [k for k in (4, 5, 6) if v[k]]
    assert said["item"] == [k for k in (9, 10, 11, 12) if v[k]][:1]  # priority: only the first
    accessories = [k for k in (7, 8, 19) if v[k]] + (["boots"] if boots else [])
    if accessories:
        assert said.get("accessories") == accessories, text
    else:
        assert "accessories" not in said, text
        assert said["sleeve"] == [k for k in (13, 14) if v[k]]
        assert said["pattern"] == [k for k in (15, 16, 17, 18) if v[k]]
        assert said["skirt"] == bool(v[20])


def test_person_vectors_are_consistent_and_captions_say_what_the_bits_say(root):
    table = {"".join(map(str, row)) for row in dc.person_vector_table()[0]}
    for split in demo_data.SPLITS:
        truth = demo_data.read_truth(root, split)
        for vector, boots, text in truth.loc[truth["kind"] == "person", ["vector", "boots", "text"]].values:
            v = bits(vector)
            assert len(v) == 21 and sum(v[1:4]) == sum(v[4:7]) == sum(v[13:15]) == 1 and sum(v[15:19]) <= 1
            assert "".join(map(str, v)) in table  # drawn from the real validation vectors
            check_caption_against_truth(text, v, boots)


def test_the_caption_checker_can_fail():
    v = bits("0,0,1,0,1,0,0,1,0,0,1,0,0,1,0,0,0,0,0,0,0")  # male adult front, hat, shoulder bag, short
    good = ("A walking man who is between 18 and 60 years old, with his body facing the camera and has a "
            "shoulderbag. He is wearning a hat.")
    check_caption_against_truth(good, v, False)
    for bad in (good.replace("a hat", "glasses"), good.replace("facing the camera", "back to the camera"),
                good.replace(" and has a shoulderbag", "")):
        with pytest.raises(AssertionError):
            check_caption_against_truth(bad, v, False)
    with pytest.raises(AssertionError):
        check_caption_against_truth(good, v, True)  # boots would be named


def test_grammar_reproduces_every_real_validation_caption():
    lines = [line.split("$") for line in (FIXTURES / "val_label.txt").read_text().splitlines()]
    persons = [(bits(a.rstrip(".")), t) for _, a, t in lines if len(a.split(",")) == 21]
    assert len(persons) == 6587
    for v, text in persons:
        assert dc.person_caption_pattern(tuple(v), "boots" in text).fullmatch(text), text
        check_caption_against_truth(text, v, "boots" in text)
    v, text = persons[0]
    assert not dc.person_caption_pattern(tuple(v), False).fullmatch(text.replace(" is ", " iz ", 1))


def test_shipped_person_vector_table_is_rebuilt_from_the_real_labels(tmp_path):
    rebuilt = dc.build_person_vector_table(FIXTURES / "val_label.txt", tmp_path / "table.csv")
    assert rebuilt.read_bytes() == dc.PERSON_TABLE.read_bytes()
    vectors, p, _ = dc.person_vector_table()
    assert vectors.shape == (718, 21) and abs(p.sum() - 1) < 1e-9


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
