"""lib.data.captions: the car caption grammar (prefixes, articles) reproduces the real captions."""
from __future__ import annotations

import pytest

from lib.data import captions, labels
from tests import FIXTURES


@pytest.fixture(scope="module")
def real_vocab() -> labels.CarVocabulary:
    """The vocabulary of the real val labels: 11 colours, 65 brands, 6 types."""
    return labels.build_car_vocabulary(labels.read_labels(FIXTURES / "val_label.txt"))


# --- parsing and candidates -----------------------------------------------------------------------
@pytest.mark.parametrize("caption, expected", [
    ("This is a white Audi.", ("This is a ", "white", "Audi", None)),
    ("This is an orange Golden Dragon.", ("This is an ", "orange", "Golden Dragon", None)),
    ("A grey China-Moto.", ("A ", "grey", "China-Moto", None)),
    ("An orange MORRIS-GARAGE Sedan.", ("An ", "orange", "MORRIS-GARAGE", "Sedan")),
    ("A Balong Heavy Truck.", ("A ", None, "Balong Heavy Truck", None)),
    ("This is a Truck.", ("This is a ", None, None, "Truck")),
    ("This is a grey Chery Sedan", ("This is a ", "grey", "Chery", "Sedan")),
])
def test_caption_parsing(real_vocab, caption, expected):
    assert tuple(vars(labels.parse_car_text(caption, real_vocab)).values()) == expected


def test_real_captions_recomposed_exactly(real_vocab):
    """Parse + compose gives back every real val car caption: the article rule is the data's."""
    cars = labels.read_labels(FIXTURES / "val_label.txt").query("kind == 'car'")
    for text in cars["text"]:
        p = labels.parse_car_text(text, real_vocab)
        assert captions.compose_car_caption(p.prefix, p.colour, p.brand, p.type, text.endswith(".")) == text


@pytest.mark.parametrize("prefix, word, expected", [
    ("A ", "orange", "An "), ("An ", "white", "A "), ("This is a ", "orange", "This is an "),
    ("This is an ", "SUV", "This is a "), ("A ", "Isuzu", "An "), ("", "orange", ""),
])
def test_fit_article(prefix, word, expected):
    assert captions.fit_article(prefix, word) == expected
