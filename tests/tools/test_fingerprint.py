"""tools.fingerprint: the smoke pipeline still makes the committed golden fingerprint."""
import copy
import json

import pytest

from tools import fingerprint


@pytest.mark.slow
@pytest.mark.notebook
def test_the_smoke_pipeline_makes_the_committed_fingerprint(smoke_notebook, smoke_workspace):
    """A change that moves the numbers must update tests/fixtures/smoke_fingerprint.json on purpose
    (make fingerprint) and re-promote the demo record in the same series of commits."""
    smoke_notebook("04_infer")
    expected = json.loads(fingerprint.FINGERPRINT.read_text())
    got = fingerprint.measure(smoke_workspace["run_dir"])
    assert fingerprint.differences(expected, got) == []  # bytes on the fingerprint's processor, else rankings


def test_bytes_count_on_the_same_machine_and_figures_everywhere():
    base = {"submission_sha256": "a" * 64, "val_map10_official_by_epoch": [0.1, 0.2],
            "scores": {"val": 0.2, "test_A": 0.3}, "machine": {"cpu_capability": "AVX512"},
            "top10": [["x.jpg", "y.jpg"], ["y.jpg", "z.jpg"]]}
    assert fingerprint.differences(base, copy.deepcopy(base)) == []
    other_bytes = {**copy.deepcopy(base), "submission_sha256": "b" * 64}
    assert "submission sha256" in fingerprint.differences(base, other_bytes)[0]
    elsewhere = {**other_bytes, "machine": {"cpu_capability": "AVX2"},
                 "val_map10_official_by_epoch": [0.1, 0.2005]}
    assert fingerprint.differences(base, elsewhere) == []  # bytes unknown there, figures within tolerance
    moved = {**elsewhere, "scores": {"val": 0.2, "test_A": 0.33}}
    assert fingerprint.differences(base, moved) == ["test_A official mAP@10: 0.33 (fingerprint 0.3)"]
    assert fingerprint.machine_signature()["cpu_capability"]


def test_another_processor_may_swap_near_ties_in_at_most_two_queries():
    want = [[f"{q}-{i}.jpg" for i in range(10)] for q in range(5)]
    swapped = [row[:] for row in want]
    swapped[0][3], swapped[0][4] = swapped[0][4], swapped[0][3]  # an order swap: no name replaced
    swapped[1][9] = "other.jpg"  # one name in, one out at the end
    assert fingerprint.ranking_differences(want, swapped) == []
    three = [row[:] for row in swapped]
    three[2][0], three[2][1] = three[2][1], three[2][0]
    assert fingerprint.ranking_differences(want, three) == [
        "3 queries ranked differently (at most 2 may: near ties)"]
    two_out = [row[:] for row in want]
    two_out[4][8:] = ["p.jpg", "q.jpg"]
    assert fingerprint.ranking_differences(want, two_out) == ["query 4: 2 of its top 10 replaced"]
    assert fingerprint.ranking_differences(want, want[:4]) == ["4 ranked queries (fingerprint 5)"]
