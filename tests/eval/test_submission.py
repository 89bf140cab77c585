"""The submission JSON: written byte-stable and atomically, every kind of broken file caught."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lib.eval import submission
from lib.eval.submission import SubmissionError, validate_submission, write_submission
from lib.paths import REPO_ROOT

TEXTS = ["This is a grey Chery Sedan.", "This is a grey Chery Sedan.", "A man in a blue coat, café."]
GALLERY = {f"vehicle_{i:07d}.jpg" for i in range(20)} | {f"{i:06d}.jpg" for i in range(20)}
NAMES = [
    [f"vehicle_{i:07d}.jpg" for i in range(10)],
    [f"vehicle_{i:07d}.jpg" for i in range(10, 20)],
    [f"{i:06d}.jpg" for i in range(10)],
]


@pytest.fixture
def case(tmp_path):
    """A queries file (BOM, CRLF, trailing blank line), a gallery folder and a valid submission."""
    queries = tmp_path / "test_text.txt"
    queries.write_bytes(("\ufeff" + "\r\n".join(TEXTS) + "\r\n\r\n").encode("utf-8"))
    gallery = tmp_path / "test_images"
    gallery.mkdir()
    for name in GALLERY:
        (gallery / name).write_bytes(b"")
    (gallery / "notes.txt").write_text("not an image")
    path = write_submission(tmp_path / "out" / "submission.json", TEXTS, NAMES, GALLERY)
    return {"queries": queries, "gallery": gallery, "path": path}


def _broken(case, mutate) -> list[str]:
    document = json.loads(case["path"].read_text(encoding="utf-8"))
    mutate(document["results"])
    case["path"].write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return validate_submission(case["path"], case["queries"], case["gallery"])


def test_a_written_submission_is_valid_and_byte_stable(case, tmp_path):
    assert validate_submission(case["path"], case["queries"], case["gallery"]) == []
    assert validate_submission(case["path"], case["queries"], GALLERY) == []
    raw = case["path"].read_bytes()
    assert "café".encode("utf-8") in raw and raw.endswith(b"]}\n")
    again = write_submission(tmp_path / "again.json", TEXTS, [tuple(n) for n in NAMES])
    assert again.read_bytes() == raw
    assert submission.read_submission(case["path"]) == (TEXTS, NAMES)


def test_not_json_names_the_position(case):
    case["path"].write_text('{"results": [\n{"text": "a",, }\n]}', encoding="utf-8")
    (problem,) = validate_submission(case["path"], case["queries"], case["gallery"])
    assert "not valid JSON" in problem and "line 2 column" in problem


@pytest.mark.parametrize("document", [{"result": []}, [], {"results": {"a": 1}}])
def test_no_results_list(case, document):
    case["path"].write_text(json.dumps(document), encoding="utf-8")
    (problem,) = validate_submission(case["path"], case["queries"], case["gallery"])
    assert '"results" list' in problem


def test_wrong_number_of_entries(case):
    problems = _broken(case, lambda results: results.pop())
    assert problems == ["2 entries in results, expected 3 (one per line of " + str(case["queries"]) + ")"]


def test_text_changed(case):
    def change(results):
        results[2]["text"] = results[2]["text"].rstrip(".")

    (problem,) = _broken(case, change)
    assert problem.startswith("query 2:") and "text changed" in problem
    assert repr(TEXTS[2]) in problem and repr(TEXTS[2].rstrip(".")) in problem


def test_reordered(case):
    (first, second) = _broken(case, lambda results: results.reverse())
    assert first.startswith("query 0:") and "reordered: that text is query 2 of" in first
    assert second.startswith("query 2:") and "reordered: that text is query 0 of" in second


@pytest.mark.parametrize("count", [9, 11])
def test_not_10_names(case, count):
    def resize(results):
        results[1]["image_names"] = sorted(GALLERY)[:count]

    (problem,) = _broken(case, resize)
    assert problem.startswith("query 1 (") and f"{count} image names, expected exactly 10" in problem


def test_repeated_name(case):
    def repeat(results):
        results[0]["image_names"][9] = results[0]["image_names"][0]

    (problem,) = _broken(case, repeat)
    assert problem.startswith("query 0 (") and "repeated image names ['vehicle_0000000.jpg']" in problem


def test_unknown_name(case):
    def unknown(results):
        results[2]["image_names"][3] = "notes.txt"

    (problem,) = _broken(case, unknown)
    assert problem.startswith("query 2 (") and "not in the gallery" in problem and "notes.txt" in problem
    assert validate_submission(case["path"], case["queries"], None) == []


def test_many_problems_are_cut_at_the_limit_with_the_total(case):
    def wreck(results):
        for entry in results:
            entry["image_names"] = ["nope.jpg"] * 3

    problems = _broken(case, wreck)  # 3 problems per query (count, repeated, unknown) = 9
    assert len(problems) == 9
    short = validate_submission(case["path"], case["queries"], case["gallery"], limit=4)
    assert len(short) == 5 and short[-1] == "... and 5 more problems (9 in all)"


@pytest.mark.parametrize(
    "texts, names, message",
    [
        (TEXTS, NAMES[:2], "3 texts but 2 image lists"),
        (TEXTS, [NAMES[0], NAMES[1][:9], NAMES[2]], "9 image names"),
        (TEXTS, [NAMES[0], NAMES[1], NAMES[2][:9] + NAMES[2][:1]], "repeated image names"),
        (TEXTS, [NAMES[0], NAMES[1], NAMES[2][:9] + ["ghost.jpg"]], "not in the gallery"),
        (["", *TEXTS[1:]], NAMES, "non-empty string"),
    ],
)
def test_write_refuses_invalid_input_and_leaves_no_file(tmp_path, texts, names, message):
    target = tmp_path / "submission.json"
    with pytest.raises(SubmissionError, match=message):
        write_submission(target, texts, names, GALLERY)
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_an_old_file_whole(tmp_path):
    target = tmp_path / "submission.json"
    target.write_text("old")
    write_submission(target, TEXTS, NAMES)
    with pytest.raises(SubmissionError):
        write_submission(target, TEXTS, NAMES[:2])
    assert submission.read_submission(target) == (TEXTS, NAMES)
    assert [p.name for p in tmp_path.iterdir()] == ["submission.json"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib.submission", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_codes(case):
    args = [str(case["path"]), "--queries", str(case["queries"]), "--gallery", str(case["gallery"])]
    done = _cli(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK") and "3 queries" in done.stdout
    _broken(case, lambda results: results[1]["image_names"].pop())
    done = _cli(*args)
    assert done.returncode == 1
    assert "query 1 (" in done.stderr and "9 image names" in done.stderr


def test_the_bytes_of_a_tiny_submission_are_exactly_these(tmp_path):
    """Pinned by a literal, not by writing twice with the same function: UTF-8 without escapes, one
    query a line, the keys in this order, a final newline."""
    names = [f"{i}.jpg" for i in range(10)]
    path = write_submission(tmp_path / "s.json", ["Un café.", "A man."], [names, names[::-1]])
    listed = ", ".join(f'"{n}"' for n in names)
    backwards = ", ".join(f'"{n}"' for n in names[::-1])
    assert path.read_bytes() == (
        '{"results": [\n'
        f'{{"text": "Un café.", "image_names": [{listed}]}},\n'
        f'{{"text": "A man.", "image_names": [{backwards}]}}\n'
        ']}\n').encode("utf-8")


@pytest.mark.parametrize("mutate, says", [
    (lambda r: r.append({"text": "extra", "image_names": NAMES[0]}), "extra entry beyond the 3 queries"),
    (lambda r: r[1].update(image_names="0123456789"), "image_names must be a list of strings"),
    (lambda r: r[1].pop("image_names"), 'no "image_names"'),
    (lambda r: r.__setitem__(1, ["not", "an", "object"]), 'entry 1: not an object with a string "text"'),
    (lambda r: r[0].update(text=r[0]["text"] + " "), "text changed"),
    (lambda r: r[0].update(text=" " + r[0]["text"]), "text changed"),
])
def test_every_refusal_of_the_validator(case, mutate, says):
    found = _broken(case, mutate)
    assert any(says in problem for problem in found), found


def test_a_ten_character_string_is_not_ten_names_even_without_a_gallery(case):
    document = json.loads(case["path"].read_text(encoding="utf-8"))
    document["results"][0]["image_names"] = "abcdefghij"
    case["path"].write_text(json.dumps(document), encoding="utf-8")
    found = validate_submission(case["path"], case["queries"], None)
    assert found and "must be a list of strings" in found[0]


def test_bytes_that_are_not_utf8_are_refused(case):
    case["path"].write_bytes(case["path"].read_bytes().replace("café".encode(), b"caf\xe9"))
    (problem,) = validate_submission(case["path"], case["queries"], case["gallery"])
    assert "is not UTF-8" in problem
