"""The best-result record: checksums refuse a changed file, submissions compare query by query."""
import json

import pytest

from lib.files import sha256_file
from lib.record import review


def _submission(path, lists):
    path.write_text(json.dumps({"results": [{"text": f"q{i}", "image_names": names}
                                            for i, names in enumerate(lists)]}))
    return path


def test_checksums_pass_then_name_both_values_on_a_change(tmp_path):
    a = tmp_path / "submission.json"
    a.write_text("{}")
    review.write_checksums(tmp_path, [a])
    assert review.verify_checksums(tmp_path)["ok"].all()
    expected = sha256_file(a)
    a.write_text("{ }")
    with pytest.raises(review.ReviewError) as err:
        review.verify_checksums(tmp_path)
    assert expected in str(err.value) and sha256_file(a) in str(err.value)
    assert "submission.json" in str(err.value)


def test_a_missing_file_is_a_mismatch(tmp_path):
    a = tmp_path / "params.yaml"
    a.write_text("x: 1\n")
    review.write_checksums(tmp_path, [a])
    a.unlink()
    with pytest.raises(review.ReviewError, match="missing"):
        review.verify_checksums(tmp_path)


def test_compare_lists_only_the_differing_queries(tmp_path):
    names = [[f"{q}_{i}.jpg" for i in range(10)] for q in range(3)]
    stored = _submission(tmp_path / "a.json", names)
    assert review.compare_submissions(stored, _submission(tmp_path / "b.json", names)).empty
    changed = [names[0], names[1][::-1], names[2]]
    diff = review.compare_submissions(stored, _submission(tmp_path / "c.json", changed))
    assert list(diff["query"]) == [1]
    with pytest.raises(review.ReviewError, match="3 queries"):
        review.compare_submissions(stored, _submission(tmp_path / "d.json", names[:2]))


def test_fresh_dir_never_deletes_a_foreign_folder(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(review.ReviewError, match="not a quick-review output"):
        review.fresh_dir(foreign)
    out = review.fresh_dir(tmp_path / "out")
    (out / "x").write_text("old")
    assert not (review.fresh_dir(out) / "x").exists()


def test_promote_refuses_an_unfinished_run(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: demo\n")
    with pytest.raises(review.ReviewError, match="submission.json"):
        review.build_record(tmp_path, tmp_path / "record")
