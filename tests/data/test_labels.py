"""lib.data.labels: strict reading, car vocabulary, query routing, the CLI (`python -m lib.data.labels`)."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from lib.data import labels
from lib.data.labels import CarParts, LabelError
from lib.paths import REPO_ROOT as REPO
from tests.data import PERSON_TEXT, VAL, bits, write

PERSON = "1,0,1,0,1,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0"


@pytest.fixture(scope="module")
def vocab(val) -> labels.CarVocabulary:
    return labels.build_car_vocabulary(val)


# --- the real validation labels -------------------------------------------------------------------
def test_real_val_counts_and_vocabulary(val, vocab):
    assert list(val.columns[:5]) == ["image", "attribute", "text", "kind", "line"]
    assert len(val) == 10_000 and val["line"].tolist() == list(range(1, 10_001))
    assert val["kind"].value_counts().to_dict() == {"person": 6587, "car": 3413}
    assert (val["kind"].iloc[:3413] == "car").all()  # file order kept: cars first, then persons
    assert val.iloc[0][["image", "attribute", "text"]].tolist() == [
        "kcbluaihml.jpg", "white Audi.", "This is a white Audi."]
    assert vocab.colours == ("black", "blue", "brown", "green", "grey", "orange", "pink", "purple",
                             "red", "white", "yellow")
    assert vocab.types == ("Bus", "Microbus", "Minivan", "SUV", "Sedan", "Truck")
    assert len(vocab.brands) == 65 and list(vocab.brands) == sorted(vocab.brands)
    multi_word = {"Golden Dragon", "China-Moto", "MORRIS-GARAGE", "Balong Heavy Truck", "Hongyan"}
    assert multi_word <= set(vocab.brands)
    assert not set(vocab.brands) & set(vocab.types)


def test_real_val_car_fields(val, vocab):
    table = labels.add_car_fields(val, vocab)
    cars, persons = table[table["kind"] == "car"], table[table["kind"] == "person"]
    assert persons[["colour", "brand", "type"]].isna().all().all()
    assert set(cars["type"].dropna()) == set(vocab.types)  # each of the 6 types occurs as a bare type
    assert cars[["brand", "type"]].notna().any(axis=1).all()  # every car attribute names something
    # the caption says the same as the attribute, and always has a prefix
    for attribute, text in zip(cars["attribute"], cars["text"]):
        a, t = labels.parse_car_text(attribute, vocab), labels.parse_car_text(text, vocab)
        assert (a.colour, a.brand, a.type) == (t.colour, t.brand, t.type) and t.prefix
    balong = cars[cars["attribute"] == "Balong Heavy Truck."].iloc[0]
    assert (balong["colour"], balong["brand"], balong["type"]) == (None, "Balong Heavy Truck", None)


def test_real_val_router(val):
    routed = [labels.query_kind(text) for text in val["text"]]
    assert routed == val["kind"].tolist()


@pytest.mark.parametrize(("text", "kind"), [
    ("A female pedestrian is walking.", "person"),
    ("Pedestrian in a red coat.", "person"),  # capitalised at the start of the sentence
    ("This Man wears a cap.", "person"),
    ("A Woman, seen from the back.", "person"),
    ("The Person carries a bag.", "person"),
    ("This is a white Audi.", "car"),
    ("A MAN Truck.", "car"),  # the brand MAN, in capitals, is no person word
    ("This is a grey Manhattan Sedan.", "car"),  # a word that starts with one is not one
    ("A red Womanly-Motors SUV.", "car"),
])
def test_person_words_route_in_lower_case_or_capitalised_only(text, kind):
    assert labels.query_kind(text) == kind


# --- strict reading -------------------------------------------------------------------------------
GOOD = f"a.jpg$white Audi.$This is a white Audi.\n000001.jpg${PERSON}${PERSON_TEXT}\n"


@pytest.mark.parametrize("bad_line, problem", [
    ("b.jpg$white Audi.", "expected 3 '$'-separated fields, got 2"),
    ("b.jpg$white Audi.$A white Audi.$extra", "expected 3 '$'-separated fields, got 4"),
    ("$white Audi.$A white Audi.", "empty image name"),
    ("b.jpg$white Audi.$", "empty text"),
    ("b.jpg$$A white Audi.", "empty attribute"),
    (f"000002.jpg${bits(0, 2)[:-2]}${PERSON_TEXT}",
     "person attribute has 20 comma-separated values, expected 21"),
    (f"000002.jpg${bits(0, 2)[:-1]}2${PERSON_TEXT}", "person attribute value 21 is '2', expected 0 or 1"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, problem):
    path = write(tmp_path, GOOD + bad_line + "\n" + GOOD)
    with pytest.raises(LabelError) as err:
        labels.read_labels(path)
    assert str(err.value) == f"val_label.txt:3: {problem}"
    assert isinstance(err.value, ValueError) and err.value.line == 3


@pytest.mark.parametrize("content", [b"", b"\n \r\n\n", b"\xef\xbb\xbf"])
def test_an_empty_file_is_refused_at_its_line_1(tmp_path, content):
    path = write(tmp_path, content)
    with pytest.raises(LabelError) as err:
        labels.read_lines(path)
    assert str(err.value) == f"val_label.txt:1: empty file: no lines in {path}"
    assert (err.value.file, err.value.line) == ("val_label.txt", 1)


def test_blank_line_in_the_middle(tmp_path):
    with pytest.raises(LabelError, match=r"^val_label.txt:3: blank line"):
        labels.read_labels(write(tmp_path, GOOD + "\n" + GOOD))


def test_bad_utf8_names_its_line(tmp_path):
    path = write(tmp_path, GOOD.encode() + b"b.jpg$white Audi.$A white \xff Audi.\n")
    with pytest.raises(LabelError, match=r"^val_label.txt:3: not UTF-8 \(byte 0xff"):
        labels.read_labels(path)
    with pytest.raises(LabelError, match=r"^test_text.txt:2: not UTF-8"):
        labels.read_queries(write(tmp_path, b"A white Audi.\nA red \xc3( BMW.\n", "test_text.txt"))


def test_odd_but_valid_files(tmp_path):
    reference = labels.read_labels(write(tmp_path, GOOD))
    for content in (b"\xef\xbb\xbf" + GOOD.encode(),              # BOM
                    GOOD.replace("\n", "\r\n").encode(),          # CRLF
                    (GOOD + "\n\n  \n").encode()):                # trailing blank lines
        assert labels.read_labels(write(tmp_path, content)).equals(reference)
    bare = f"a.jpg$white Audi$This is a white Audi\n000001.jpg${PERSON}${PERSON_TEXT.rstrip('.')}\n"
    no_periods = labels.read_labels(write(tmp_path, bare))
    assert no_periods["kind"].tolist() == ["car", "person"]
    assert no_periods["attribute"].tolist() == ["white Audi", PERSON]  # kept as in the file
    assert no_periods["text"].tolist() == ["This is a white Audi", PERSON_TEXT.rstrip(".")]
    with_period = labels.read_labels(write(tmp_path, f"000001.jpg${PERSON}.${PERSON_TEXT}\n"))
    assert with_period["kind"].tolist() == ["person"]
    odd = labels.read_labels(write(tmp_path, "a.jpg$A white Audi.$This is a white Audi.\n" + GOOD + GOOD))
    assert odd["image"].tolist() == ["a.jpg", "a.jpg", "000001.jpg", "a.jpg", "000001.jpg"]  # repeats kept
    vocab = labels.build_car_vocabulary(odd)
    assert (vocab.colours, vocab.brands) == (("white",), ("Audi",))
    assert labels.parse_car_text("A white Audi.", vocab) == CarParts("A ", "white", "Audi", None)


# --- cars -----------------------------------------------------------------------------------------
def cars(*attributes: str) -> pd.DataFrame:
    return pd.DataFrame({"image": [f"{k}.jpg" for k in range(len(attributes))], "attribute": attributes,
                         "text": attributes, "kind": "car", "line": range(1, len(attributes) + 1)})


def test_vocabulary_rule_for_brands_and_types():
    vocab = labels.build_car_vocabulary(cars(
        "white Golden Dragon.", "pink China-Moto.", "blue MORRIS-GARAGE", "Balong Heavy Truck.",
        "Hongyan.", "Truck.", "white Audi.", "Audi Sedan.", "red Mini SUV.", "Foo Bar Bus."))
    # "Audi Sedan": Audi is a brand on its own elsewhere, so Sedan is split off; "Mini SUV" and
    # "Foo Bar Bus" have no such brand elsewhere, so they stay whole (like "Balong Heavy Truck").
    assert vocab.brands == ("Audi", "Balong Heavy Truck", "China-Moto", "Foo Bar Bus", "Golden Dragon",
                            "Hongyan", "MORRIS-GARAGE", "Mini SUV")
    assert vocab.colours == ("blue", "pink", "red", "white")
    assert labels.build_car_vocabulary(cars("Audi Van."), types=("Van",)).types == ("Van",)


def test_a_brand_with_a_type_is_split_when_the_brand_stands_alone_elsewhere():
    vocab = labels.build_car_vocabulary(cars("Golden Dragon.", "white Golden Dragon Bus.",
                                             "Balong Heavy Truck."))
    assert vocab.brands == ("Balong Heavy Truck", "Golden Dragon")


def test_add_car_fields_keeps_the_rows_of_a_filtered_table(val, vocab):
    table = val.iloc[[3412, 0, 5000]]  # "Minivan.", "white Audi.", a person; the index is not 0, 1, 2
    out = labels.add_car_fields(table, vocab)
    assert out.index.tolist() == [3412, 0, 5000]
    assert out[["colour", "brand", "type"]].values.tolist() == [
        [None, None, "Minivan"], ["white", "Audi", None], [None, None, None]]
    assert "colour" not in table.columns  # a copy: the given table is left as it was


@pytest.mark.parametrize("text, parts", [
    ("white Golden Dragon.", (None, "white", "Golden Dragon", None)),
    ("pink China-Moto", (None, "pink", "China-Moto", None)),
    ("blue MORRIS-GARAGE Sedan.", (None, "blue", "MORRIS-GARAGE", "Sedan")),
    ("Balong Heavy Truck.", (None, None, "Balong Heavy Truck", None)),
    ("Balong Heavy Truck Truck.", (None, None, "Balong Heavy Truck", "Truck")),
    ("grey Golden Dragon Bus", (None, "grey", "Golden Dragon", "Bus")),
    ("Truck.", (None, None, None, "Truck")),
    ("red SUV.", (None, "red", None, "SUV")),
    ("Hongyan.", (None, None, "Hongyan", None)),
    ("white.", (None, "white", None, None)),
    ("silver Unknown Brand Sedan.", (None, "silver", "Unknown Brand", "Sedan")),
    ("Unknown Brand", (None, None, "Unknown Brand", None)),
    ("red Unknown Brand.", (None, "red", "Unknown Brand", None)),
    ("white Audi A4.", (None, "white", "Audi A4", None)),  # a known brand, then no type: one brand
    ("white Audi Q Sedan.", (None, "white", "Audi Q", "Sedan")),  # a known brand, a word, then a type
    ("white Golden Dragon  Bus.", (None, "white", "Golden Dragon", "Bus")),  # two spaces: not in the brand
])
def test_parse_brands(vocab, text, parts):
    got = labels.parse_car_text(text, vocab)
    assert (got.colour, got.brand, got.type) == parts[1:] and got.prefix == ""


@pytest.mark.parametrize("prefix", ["This is a ", "This is an ", "A ", "An "])
def test_parse_caption_prefixes(vocab, prefix):
    assert labels.parse_car_text(f"{prefix}grey Chery Sedan.", vocab) == CarParts(
        prefix, "grey", "Chery", "Sedan")
    assert labels.parse_car_text(f"{prefix}orange Balong Heavy Truck Truck", vocab) == CarParts(
        prefix, "orange", "Balong Heavy Truck", "Truck")
    assert labels.parse_car_text(f"{prefix}SUV.", vocab) == CarParts(prefix, None, None, "SUV")


def test_a_known_colour_counts_whatever_its_case():
    vocab = labels.CarVocabulary(colours=("Grey",), brands=("Audi",))
    assert labels.parse_car_text("A Grey Audi.", vocab) == CarParts("A ", "Grey", "Audi", None)
    assert labels.parse_car_text("A Black Audi.", vocab) == CarParts("A ", None, "Black Audi", None)


def test_the_longest_known_brand_wins_when_a_shorter_one_also_leaves_a_type():
    # with a two-word type, "Ford" + "Pickup Truck" would parse too: the longer brand "Ford Pickup" wins
    vocab = labels.build_car_vocabulary(cars("Ford.", "Ford Pickup."), types=("Truck", "Pickup Truck"))
    assert vocab.brands == ("Ford", "Ford Pickup")
    assert labels.parse_car_text("white Ford Pickup Truck.", vocab) == CarParts(
        "", "white", "Ford Pickup", "Truck")


# --- queries --------------------------------------------------------------------------------------
def test_read_queries(tmp_path):
    texts = ["This is a grey Chery Sedan.", "An orange MAN Truck.", "A white Mini.", PERSON_TEXT,
             "A walking man who is at least 60 years old, and is standing sideways. He is wearning a hat.",
             "A pedestrian who is female is a minor, with her body back to the camera. She is in a longcoat."]
    path = write(tmp_path, "\ufeff" + "\r\n".join(texts) + "\r\n\r\n", "test_text.txt")
    queries = labels.read_queries(path)
    assert list(queries.columns) == ["text", "kind", "line"]
    assert queries["text"].tolist() == texts  # exactly as in the file
    assert queries["kind"].tolist() == ["car"] * 3 + ["person"] * 3
    assert queries["line"].tolist() == [1, 2, 3, 4, 5, 6]


# --- CLI ------------------------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib.data.labels", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_cli(tmp_path):
    done = cli(str(VAL))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["lines"], result["car"], result["person"]) == (10_000, 3413, 6587)
    assert (len(result["colours"]), len(result["types"]), len(result["brands"])) == (11, 6, 65)

    bad = cli(str(write(tmp_path, GOOD + "b.jpg$white Audi.\n")))
    assert bad.returncode == 1
    assert "val_label.txt:3: expected 3 '$'-separated fields, got 2" in bad.stderr
    assert "Traceback" not in bad.stderr

    queries = write(tmp_path, f"This is a grey Chery Sedan.\n{PERSON_TEXT}\n{PERSON_TEXT}\n", "test_text.txt")
    done = cli("--queries", str(queries))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"queries": 3, "car": 1, "person": 2}


# The same command line in-process, where the mutation tests can see it (test_cli runs the module).
LABELS = ("a.jpg$white Audi.$This is a white Audi.\nb.jpg$red Škoda.$A red Škoda.\n"
          f"c.jpg$SUV.$An SUV.\n000001.jpg${PERSON}${PERSON_TEXT}\n")



def test_main_prints_a_table_then_the_json_line(tmp_path, capsys):
    assert labels.main([str(write(tmp_path, LABELS))]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "   lines      car   person  colours    types   brands",
        "       4        3        1        2        6        2",
        '{"lines": 4, "car": 3, "person": 1, "colours": ["red", "white"], '  # UTF-8 as it is, not \\u escapes
        '"types": ["Bus", "Microbus", "Minivan", "SUV", "Sedan", "Truck"], "brands": ["Audi", "Škoda"]}',
    ]


def test_main_counts_zero_of_a_kind_that_is_absent(tmp_path, capsys):
    persons = write(tmp_path, f"000001.jpg${PERSON}${PERSON_TEXT}\n", "persons.txt")
    assert labels.main([str(persons)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "lines": 1, "car": 0, "person": 1, "colours": [], "types": list(labels.CAR_TYPES), "brands": []}
    cars_only = write(tmp_path, "a.jpg$white Audi.$This is a white Audi.\n", "cars.txt")
    assert labels.summary(labels.read_labels(cars_only), labels.CarVocabulary((), ()))["person"] == 0


def test_main_reads_a_queries_file_with_queries(tmp_path, capsys):
    for texts, counts in ([["This is a grey Chery Sedan.", PERSON_TEXT, PERSON_TEXT], (3, 1, 2)],
                          [["A white Audi."], (1, 1, 0)], [[PERSON_TEXT], (1, 0, 1)]):
        path = write(tmp_path, "\n".join(texts) + "\n", "test_text.txt")
        assert labels.main(["--queries", str(path)]) == 0
        assert capsys.readouterr().out == json.dumps(dict(zip(("queries", "car", "person"), counts))) + "\n"


def test_main_refuses_a_bad_file_with_exit_1_and_one_error_line(tmp_path, capsys):
    assert labels.main([str(write(tmp_path, GOOD + "b.jpg$white Audi.\n"))]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: val_label.txt:3: expected 3 '$'-separated fields, got 2\n"
    assert labels.main(["--queries", str(tmp_path / "absent.txt")]) == 1
    assert capsys.readouterr().err.startswith("error: [Errno 2] No such file or directory")


def test_main_usage_says_what_the_file_and_the_flag_are(capsys):
    with pytest.raises(SystemExit) as exit_:
        labels.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: python -m lib.data.labels [-h] [--queries] file ")
    assert "Label files, car vocabulary and query routing (the organisers' formats, read strictly)." in text
    assert "comma-separated" not in text  # the docstring's first line only
    assert "file label file (image$attribute$text) or, with --queries, test_text.txt" in text
    assert "--queries FILE is a queries file (one text a line)" in text
