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
    assert fingerprint.differences(expected, got) == []
    if expected["machine"] != got["machine"]:
        pytest.skip(f"figures agree; bytes not compared on this processor ({got['machine']}, the fingerprint "
                    f"was made on {expected['machine']})")


def test_bytes_count_on_the_same_machine_and_figures_everywhere():
    base = {"submission_sha256": "a" * 64, "val_map10_official_by_epoch": [0.1, 0.2],
            "scores": {"val": 0.2, "test_A": 0.3}, "machine": {"cpu_capability": "AVX512"}}
    assert fingerprint.differences(base, copy.deepcopy(base)) == []
    other_bytes = {**copy.deepcopy(base), "submission_sha256": "b" * 64}
    assert "submission sha256" in fingerprint.differences(base, other_bytes)[0]
    elsewhere = {**other_bytes, "machine": {"cpu_capability": "AVX2"},
                 "val_map10_official_by_epoch": [0.1, 0.2005]}
    assert fingerprint.differences(base, elsewhere) == []  # bytes unknown there, figures within tolerance
    moved = {**elsewhere, "scores": {"val": 0.2, "test_A": 0.33}}
    assert fingerprint.differences(base, moved) == ["test_A official mAP@10: 0.33 (fingerprint 0.3)"]
    assert fingerprint.machine_signature()["cpu_capability"]
