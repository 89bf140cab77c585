"""lib.eval.query_policy: the reference's rewrites of car queries; person queries untouched."""
from __future__ import annotations

import pytest

from lib.eval.query_policy import apply_policy, strip_prefix

CAR_QUERIES = ["This is a grey Chery Sedan.", "This is an orange Buick SUV.", "A white Audi Sedan.",
               "An orange Golden Dragon Bus."]
PERSON = "A female pedestrian is someone who walks on foot. She is in a short sleeve shirt."


def test_strip_prefix_on_the_four_prefixes():
    out = apply_policy(CAR_QUERIES + [PERSON], ["car"] * 4 + ["person"], "strip_prefix")
    assert out == ["grey Chery Sedan", "orange Buick SUV", "white Audi Sedan", "orange Golden Dragon Bus",
                   PERSON]


def test_surveillance_appends_to_car_queries_only():
    out = apply_policy([CAR_QUERIES[0], PERSON, "Truck"], ["car", "person", "car"], "surveillance")
    assert out == ["This is a grey Chery Sedan image taken by traffic surveillance cameras", PERSON,
                   "Truck image taken by traffic surveillance cameras"]


def test_policy_none_and_errors():
    assert apply_policy(CAR_QUERIES, ["car"] * 4, "none") == CAR_QUERIES
    assert strip_prefix("Anhui Jianghuai truck.") == "Anhui Jianghuai truck"  # "An" only as a word
    with pytest.raises(ValueError, match="surveilance"):
        apply_policy(CAR_QUERIES, ["car"] * 4, "surveilance")
    with pytest.raises(ValueError, match="one kind per query"):
        apply_policy(CAR_QUERIES, ["car"], "none")
    with pytest.raises(ValueError, match="query 2"):
        apply_policy(CAR_QUERIES[:2], ["car", "vehicle"], "none")


def test_the_refusals_list_the_choices():
    with pytest.raises(ValueError) as refused:
        apply_policy(CAR_QUERIES, ["car"] * 4, "surveilance")
    assert str(refused.value) == ("unknown query policy 'surveilance'; choose one of none, strip_prefix, "
                                  "surveillance")
    with pytest.raises(ValueError) as refused:
        apply_policy(CAR_QUERIES[:2], ["car", "vehicle"], "none")
    assert str(refused.value) == ("query 2 ('This is an orange Buick SUV.') has kind 'vehicle'; "
                                  "kinds are car, person")
