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
    assert problem == f"query 2: expected {TEXTS[2]!r}, got {TEXTS[2].rstrip('.')!r} (text changed)"


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


def test_an_extra_entry_is_named_after_the_count(case):
    problems = _broken(case, lambda results: results.append({"text": "x", "image_names": NAMES[0]}))
    assert problems == [f"4 entries in results, expected 3 (one per line of {case['queries']})",
                        "query 3 ('x'): extra entry beyond the 3 queries"]


def test_entries_that_are_no_objects_with_a_text_or_have_no_names_are_named_and_skipped(case):
    def wreck(results):
        results[0] = ["not", "an", "object"]
        results[1] = {"text": 7, "image_names": NAMES[1]}
        del results[2]["image_names"]

    assert _broken(case, wreck) == [
        "entry 0: not an object with a string \"text\": ['not', 'an', 'object']",
        "entry 1: not an object with a string \"text\": "
        + repr({"text": 7, "image_names": NAMES[1]})[:80],  # a long entry is cut at 80 characters
        f"query 2 ({TEXTS[2]!r}): no \"image_names\"",
    ]


def test_an_entry_without_names_does_not_hide_the_next_ones_problems(case):
    def names_missing_first(results):
        del results[0]["image_names"]
        results[2]["image_names"].pop()

    assert _broken(case, names_missing_first) == [
        f"query 0 ({TEXTS[0]!r}): no \"image_names\"",
        f"query 2 ({TEXTS[2]!r}): 9 image names, expected exactly 10"]


def test_entry_problems_name_the_query_and_its_text():
    where = "query 4 ('A white Audi.')"
    assert submission.entry_problems(4, "A white Audi.", "abcdefghij", None) == [
        f"{where}: image_names must be a list of strings, got 'abcdefghij'"]
    assert submission.entry_problems(4, "A white Audi.", list(range(10)), None) == [
        f"{where}: image_names must be a list of strings, got [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    assert submission.entry_problems(4, "A white Audi.", [f"{i}.jpg" for i in range(40)], None) == [
        f"{where}: 40 image names, expected exactly 10"]
    names = ["a.jpg", "x.jpg", "y.jpg", "x.jpg", "z.jpg", "w.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    gallery = {"a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"}
    assert submission.entry_problems(4, "A white Audi.", names, gallery) == [
        f"{where}: repeated image names ['x.jpg']",
        f"{where}: 4 names not in the gallery, e.g. ['x.jpg', 'y.jpg', 'z.jpg']"]  # each unknown name once


def test_gallery_names_from_a_folder_a_collection_or_none(case, tmp_path):
    assert submission.gallery_names(case["gallery"]) == GALLERY  # image files only, not notes.txt
    assert submission.gallery_names(str(case["gallery"])) == GALLERY
    assert submission.gallery_names(["a.jpg", "a.jpg"]) == {"a.jpg"}
    assert submission.gallery_names(None) is None
    with pytest.raises(SubmissionError) as err:
        submission.gallery_names(tmp_path / "absent")
    assert str(err.value) == f"gallery directory {tmp_path / 'absent'} does not exist"


@pytest.mark.parametrize("document, problem", [
    ('{"results": [', "{path} is not valid JSON: Expecting value at line 1 column 14 (char 13)"),
    ('{"results": [{"text": "a", "image_names": []}, "b"]}',
     "{path}: entry 1 is not an object with a string \"text\": 'b'"),
    ('{"results": [{"text": 1, "image_names": []}]}',
     "{path}: entry 0 is not an object with a string \"text\": {{'text': 1, 'image_names': []}}"),
    ('{"results": [{"text": "a", "image_names": []}, {"text": "b"}]}',
     "{path}: query 1 ('b') has no \"image_names\" list"),
])
def test_read_submission_refuses_a_malformed_file_naming_it(tmp_path, document, problem):
    path = tmp_path / "submission.json"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(SubmissionError) as err:
        submission.read_submission(path)
    assert str(err.value) == problem.format(path=path)


def test_many_problems_are_cut_at_the_limit_with_the_total(case):
    def wreck(results):
        for entry in results:
            entry["image_names"] = ["nope.jpg"] * 3

    problems = _broken(case, wreck)  # 3 problems per query (count, repeated, unknown) = 9
    assert len(problems) == 9
    short = validate_submission(case["path"], case["queries"], case["gallery"], limit=4)
    assert len(short) == 5 and short[-1] == "... and 5 more problems (9 in all)"
    assert validate_submission(case["path"], case["queries"], case["gallery"], limit=9) == problems  # all fit


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


def test_write_refusal_names_each_problem_on_its_own_line(tmp_path):
    with pytest.raises(SubmissionError) as err:
        write_submission(tmp_path / "s.json", ["", TEXTS[1]], [NAMES[0], NAMES[1][:9]])
    assert str(err.value) == ("refusing to write an invalid submission:\n"
                              "query 0 (''): text must be a non-empty string\n"
                              f"query 1 ({TEXTS[1]!r}): 9 image names, expected exactly 10")
    with pytest.raises(SubmissionError, match="image_names must be a list of strings, got 'abcdefghij'"):
        write_submission(tmp_path / "s.json", TEXTS[:1], ["abcdefghij"])  # a string is not 10 names
    many = [f"text {i}" for i in range(25)]
    with pytest.raises(SubmissionError) as err:
        write_submission(tmp_path / "s.json", many, [NAMES[0][:9]] * 25)
    lines = str(err.value).splitlines()
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "... and 5 more problems (25 in all)"
    assert not (tmp_path / "s.json").exists()


def test_write_replaces_an_old_file_whole(tmp_path):
    target = tmp_path / "submission.json"
    target.write_text("old")
    write_submission(target, TEXTS, NAMES)
    with pytest.raises(SubmissionError):
        write_submission(target, TEXTS, NAMES[:2])
    assert submission.read_submission(target) == (TEXTS, NAMES)
    assert [p.name for p in tmp_path.iterdir()] == ["submission.json"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib.eval.submission", *args], cwd=REPO_ROOT,
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


# The same command line in-process, where the mutation tests can see it (test_cli_exit_codes runs the module).
def test_main_says_ok_with_what_it_checked(case, capsys):
    sub, queries, gallery = str(case["path"]), str(case["queries"]), str(case["gallery"])
    assert submission.main([sub, "--queries", queries, "--gallery", gallery]) == 0
    assert capsys.readouterr().out == (f"OK {sub}: 3 queries in order, 10 distinct names each, "
                                       f"all in the gallery {gallery}\n")
    assert submission.main([sub, "--queries", queries]) == 0
    assert capsys.readouterr().out == (f"OK {sub}: 3 queries in order, 10 distinct names each, "
                                       "gallery not checked\n")


def test_main_lists_the_problems_with_exit_1(case, capsys):
    _broken(case, lambda results: results[1]["image_names"].pop())
    sub, queries, gallery = str(case["path"]), str(case["queries"]), str(case["gallery"])
    _broken(case, lambda results: results[2]["image_names"].__setitem__(0, "notes.txt"))
    assert submission.main([sub, "--queries", queries, "--gallery", gallery]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"INVALID {sub}:\n"
                            f"  query 1 ({TEXTS[1]!r}): 9 image names, expected exactly 10\n"
                            f"  query 2 ({TEXTS[2]!r}): 1 names not in the gallery, e.g. ['notes.txt']\n")
    assert submission.main([sub, "--queries", queries]) == 1  # without a gallery, the count still fails
    assert "notes.txt" not in capsys.readouterr().err


def test_main_stops_with_exit_1_on_files_it_cannot_read(case, tmp_path, capsys):
    sub, queries = str(case["path"]), str(case["queries"])
    assert submission.main([sub, "--queries", queries, "--gallery", str(tmp_path / "absent")]) == 1
    assert capsys.readouterr().err == f"error: gallery directory {tmp_path / 'absent'} does not exist\n"
    assert submission.main([sub, "--queries", str(tmp_path / "absent.txt")]) == 1
    assert capsys.readouterr().err.startswith("error: [Errno 2] No such file or directory")


def test_main_usage(capsys):
    with pytest.raises(SystemExit) as exit_:
        submission.main(["s.json"])
    assert exit_.value.code == 2
    assert "the following arguments are required: --queries" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        submission.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: python -m lib.eval.submission [-h] --queries QUERIES [--gallery GALLERY] "
                           "submission Validate a submission. ")
    assert "submission submission JSON" in text
    assert "--queries QUERIES the queries file (test_text.txt)" in text
    assert "--gallery GALLERY directory of gallery images (omitted: names are not checked)" in text
