"""Write and validate the submission JSON (format: the README). Written atomically, in deterministic
bytes (UTF-8, one query per line): equal rankings give equal files, a diff reads query by query.
Problems name queries by 0-based index and text; the CLI exits 1 on any."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from lib.data.labels import read_queries
from lib.data.layout import image_names
from lib.errors import KitError
from lib.files import atomic_write_text

TOP_K = 10
MAX_PROBLEMS = 20


class SubmissionError(KitError, ValueError):
    """A submission that is invalid, or cannot be read; the message lists the problems."""


def _query(q: int, text: object) -> str:
    return f"query {q} ({text!r})"


def entry_problems(q: int, text: object, names: object, gallery: Collection[str] | None) -> list[str]:
    """What is wrong with one entry's image list (not its text): count, repeats, unknown names."""
    where = _query(q, text)
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return [f"{where}: image_names must be a list of strings, got {names!r:.80}"]
    found = []
    if len(names) != TOP_K:
        found.append(f"{where}: {len(names)} image names, expected exactly {TOP_K}")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        found.append(f"{where}: repeated image names {repeated}")
    if gallery is not None:
        unknown = [name for name in dict.fromkeys(names) if name not in gallery]
        if unknown:
            found.append(f"{where}: {len(unknown)} names not in the gallery, e.g. {unknown[:3]}")
    return found


def _limited(found: list[str], limit: int | None) -> list[str]:
    if limit is None or len(found) <= limit:
        return found
    return found[:limit] + [f"... and {len(found) - limit} more problems ({len(found)} in all)"]


def write_submission(
    path: str | Path,
    texts: Sequence[str],
    image_names: Sequence[Sequence[str]],
    gallery: Collection[str] | None = None,
) -> Path:
    """Validate, then write `{"results": [...]}` atomically in the given order; returns the path."""
    found = []
    if len(texts) != len(image_names):
        found.append(f"{len(texts)} texts but {len(image_names)} image lists")
    for q, (text, names) in enumerate(zip(texts, image_names)):
        if not isinstance(text, str) or not text:
            found.append(f"{_query(q, text)}: text must be a non-empty string")
        names = names if isinstance(names, (str, list)) else list(names)  # tuples, numpy arrays
        found += entry_problems(q, text, names, gallery)
    if found:
        shown = "\n".join(_limited(found, MAX_PROBLEMS))
        raise SubmissionError(f"refusing to write an invalid submission:\n{shown}")
    lines = [json.dumps({"text": text, "image_names": list(names)}, ensure_ascii=False)
             for text, names in zip(texts, image_names)]
    body = '{"results": [\n' + ",\n".join(lines) + "\n]}\n"
    return atomic_write_text(path, body)


def read_query_texts(path: str | Path) -> list[str]:
    """The query texts of test_text.txt, in order (`lib.data.labels.read_queries`: BOM, CRLF accepted)."""
    return list(read_queries(path)["text"])


def gallery_names(gallery_dir_or_names: str | Path | Iterable[str] | None) -> set[str] | None:
    """Image file names in a directory (by suffix), or the given names as a set; None: no check."""
    if gallery_dir_or_names is None:
        return None
    if isinstance(gallery_dir_or_names, (str, Path)):
        folder = Path(gallery_dir_or_names)
        if not folder.is_dir():
            raise SubmissionError(f"gallery directory {folder} does not exist")
        return set(image_names(folder))
    return set(gallery_dir_or_names)


def _load_results(path: str | Path) -> tuple[list | None, list[str]]:
    """The `results` list of a submission file, or None and the one problem that stops reading."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        return None, [f"cannot read {path}: {err}"]
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        return None, [f"{path} is not UTF-8: {err}"]
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno} (char {err.pos})"
        return None, [f"{path} is not valid JSON: {err.msg} at {where}"]
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        return None, [f'{path} has no "results" list at the top level (expected {{"results": [...]}})']
    return document["results"], []


def read_submission(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """(texts, image name lists) of a submission; raises SubmissionError on a malformed file."""
    results, found = _load_results(path)
    if results is None:
        raise SubmissionError(found[0])
    texts, names = [], []
    for q, entry in enumerate(results):
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            raise SubmissionError(f'{path}: entry {q} is not an object with a string "text": {entry!r:.80}')
        if not isinstance(entry.get("image_names"), list):
            raise SubmissionError(f'{path}: {_query(q, entry["text"])} has no "image_names" list')
        texts.append(entry["text"])
        names.append(entry["image_names"])
    return texts, names


def validate_submission(
    submission_path: str | Path,
    queries_path: str | Path,
    gallery_dir_or_names: str | Path | Iterable[str] | None,
    limit: int | None = MAX_PROBLEMS,
) -> list[str]:
    """Problems of a submission file (empty: valid): the first `limit` (None: all), then their count.
    `gallery_dir_or_names`: a directory of gallery images, a collection of names, or None (no check)."""
    results, found = _load_results(submission_path)
    if results is None:
        return found
    expected = read_query_texts(queries_path)
    gallery = gallery_names(gallery_dir_or_names)
    if len(results) != len(expected):
        found.append(
            f"{len(results)} entries in results, expected {len(expected)} (one per line of {queries_path})"
        )
    first_index = {}
    for q, text in enumerate(expected):
        first_index.setdefault(text, q)
    for q, entry in enumerate(results):
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            found.append(f'entry {q}: not an object with a string "text": {entry!r:.80}')
            continue
        text = entry["text"]
        if q < len(expected) and text != expected[q]:
            elsewhere = first_index.get(text)
            how = "text changed"
            if elsewhere is not None:
                how = f"reordered: that text is query {elsewhere} of the queries file"
            found.append(f"query {q}: expected {expected[q]!r}, got {text!r} ({how})")
        elif q >= len(expected):
            found.append(f"{_query(q, text)}: extra entry beyond the {len(expected)} queries")
        if "image_names" not in entry:
            found.append(f'{_query(q, text)}: no "image_names"')
            continue
        found += entry_problems(q, text, entry["image_names"], gallery)
    return _limited(found, limit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.eval.submission",
                                     description="Validate a submission.")
    parser.add_argument("submission", help="submission JSON")
    parser.add_argument("--queries", required=True, help="the queries file (test_text.txt)")
    parser.add_argument("--gallery", help="directory of gallery images (omitted: names are not checked)")
    args = parser.parse_args(argv)
    try:
        found = validate_submission(args.submission, args.queries, args.gallery)
    except (KitError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if found:
        print(f"INVALID {args.submission}:", file=sys.stderr)
        print("\n".join(f"  {problem}" for problem in found), file=sys.stderr)
        return 1
    count = len(read_query_texts(args.queries))
    checked = f"all in the gallery {args.gallery}" if args.gallery else "gallery not checked"
    print(f"OK {args.submission}: {count} queries in order, {TOP_K} distinct names each, {checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
