"""lib.demo.captions: the demo's caption grammar is the real one (every real caption matches), with the
real shares of car caption forms."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from lib.data.attributes import CAR_TYPES
from lib.demo import captions as dc
from lib.demo import dataset as demo_data
from tests import FIXTURES
from tests.demo import bits, check_caption_against_truth


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


def caption_pattern(vector: tuple[int, ...], boots: bool) -> re.Pattern:
    """Every caption the demo's grammar allows for this vector, as one regex."""
    slots = dc.caption_slots(vector, boots)
    return re.compile("".join("(?:" + "|".join(map(re.escape, s)) + ")" for s in slots))


def test_grammar_reproduces_every_real_validation_caption():
    lines = [line.split("$") for line in (FIXTURES / "val_label.txt").read_text().splitlines()]
    persons = [(bits(a.rstrip(".")), t) for _, a, t in lines if len(a.split(",")) == 21]
    assert len(persons) == 6587
    for v, text in persons:
        assert caption_pattern(tuple(v), "boots" in text).fullmatch(text), text
        check_caption_against_truth(text, v, "boots" in text)
    v, text = persons[0]
    assert not caption_pattern(tuple(v), False).fullmatch(text.replace(" is ", " iz ", 1))


