"""Label files, car vocabulary and query routing (the organisers' formats, read strictly).

A line is a person line when its attribute is 21 comma-separated 0/1 items, else a car line. File
order, repeated texts and repeated images are kept. `python -m lib.data.labels [--queries] FILE`
prints counts, the last line as JSON; a bad file: `file:line: problem` on stderr, exit 1."""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.data.attributes import CAR_TYPES, N_PERSON_BITS
from lib.data.captions import split_prefix, strip_period
from lib.errors import KitError

# Every person caption opener in persons.md names one of these; no car caption does (an all-caps
# brand such as "MAN" is not a match)
PERSON_WORDS = frozenset({"pedestrian", "man", "woman", "male", "female", "person"})
_WORD = re.compile(r"[A-Za-z]+")
_VECTORISH = re.compile(r"[\d,\s]*\d[\d,\s]*")  # only digits, commas and spaces: meant as a vector


class LabelError(KitError, ValueError):
    """A label, query or ground-truth file that cannot be read; the message starts `file:line:`."""

    def __init__(self, file: str, line: int, problem: str):
        super().__init__(f"{file}:{line}: {problem}")
        self.file, self.line, self.problem = file, line, problem


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (BOM, CRLF and trailing blank lines accepted; LabelError else)."""
    path = Path(path)
    raw = path.read_bytes()
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        body = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        at = bom + err.start
        raise LabelError(path.name, raw[:at].count(b"\n") + 1,
                         f"not UTF-8 (byte 0x{raw[at]:02x} at offset {at})") from None
    lines = [line[:-1] if line.endswith("\r") else line for line in body.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise LabelError(path.name, 1, f"empty file: no lines in {path}")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise LabelError(path.name, number, "blank line before the end of the file")
    return lines


def person_vector(attribute: str) -> list[int] | None:
    """The 21 bits of a person attribute, or None when the attribute is not a 0/1 vector."""
    items = strip_period(attribute).split(",")
    if len(items) == N_PERSON_BITS and all(item in ("0", "1") for item in items):
        return [int(item) for item in items]
    return None


def _check_attribute(attribute: str) -> str | None:
    """What is wrong with an attribute that is meant as a person vector but is not one."""
    body = strip_period(attribute)
    if not body:
        return "empty attribute"
    if _VECTORISH.fullmatch(body) and person_vector(body) is None:
        items = body.split(",")
        bad = [i + 1 for i, item in enumerate(items) if item not in ("0", "1")]
        if len(items) != N_PERSON_BITS:
            return f"person attribute has {len(items)} comma-separated values, expected {N_PERSON_BITS}"
        return f"person attribute value {bad[0]} is {items[bad[0] - 1]!r}, expected 0 or 1"
    return None


def read_labels(path: str | Path) -> pd.DataFrame:
    """An `image$attribute$text` file -> DataFrame[image, attribute, text, kind, line]."""
    name = Path(path).name
    rows = []
    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split("$")
        if len(fields) != 3:
            raise LabelError(name, number, f"expected 3 '$'-separated fields, got {len(fields)}")
        image, attribute, text = fields
        if not image.strip():
            raise LabelError(name, number, "empty image name")
        if not text.strip():
            raise LabelError(name, number, "empty text")
        problem = _check_attribute(attribute)
        if problem:
            raise LabelError(name, number, problem)
        kind = "person" if person_vector(attribute) is not None else "car"
        rows.append((image, attribute, text, kind, number))
    return pd.DataFrame(rows, columns=["image", "attribute", "text", "kind", "line"]).astype(
        {"line": "int64"})



@dataclass(frozen=True)
class CarVocabulary:
    """Car colours, brands and types, each a sorted tuple."""

    colours: tuple[str, ...]
    brands: tuple[str, ...]
    types: tuple[str, ...] = CAR_TYPES


@dataclass(frozen=True)
class CarParts:
    """One car attribute, caption or query split up; any part may be None (prefix: "" if none)."""

    prefix: str
    colour: str | None
    brand: str | None
    type: str | None


def _colour_rest(text: str, colours: Iterable[str] | None = None) -> tuple[str, str | None, str]:
    """(prefix, colour, rest): the colour is the first word when it is all lowercase (or known)."""
    prefix, body = split_prefix(text)
    first, _, rest = body.partition(" ")
    if first and (first.islower() or (colours is not None and first in colours)):
        return prefix, first, rest.strip()
    return prefix, None, body


def build_car_vocabulary(df: pd.DataFrame, types: Iterable[str] = CAR_TYPES) -> CarVocabulary:
    """Colours and brands from the car attributes of `df`. A remainder `X T`, T a type, is brand X plus
    T only when X is a brand on its own elsewhere; otherwise it is one brand ("Balong Heavy Truck")."""
    types = tuple(sorted(set(types)))
    colours, remainders = set(), set()
    for attribute in df.loc[df["kind"] == "car", "attribute"]:
        _, colour, rest = _colour_rest(attribute)
        if colour:
            colours.add(colour)
        if rest and rest not in types:
            remainders.add(rest)
    plain = {r for r in remainders if r.rpartition(" ")[2] not in types}
    brands = set(plain)
    for rest in remainders - plain:
        head, _, _ = rest.rpartition(" ")
        brands.add(head if head in plain else rest)
    return CarVocabulary(tuple(sorted(colours)), tuple(sorted(brands)), types)


def parse_car_text(text: str, vocab: CarVocabulary) -> CarParts:
    """Split "This is a grey Chery Sedan." into ("This is a ", "grey", "Chery", "Sedan"); after the
    colour, known brands are matched longest first, and an unknown remainder is a brand (+ type)."""
    prefix, colour, rest = _colour_rest(text, vocab.colours)
    if not rest:
        return CarParts(prefix, colour, None, None)
    if rest in vocab.types:
        return CarParts(prefix, colour, None, rest)
    if rest in vocab.brands:
        return CarParts(prefix, colour, rest, None)
    for brand in sorted((b for b in vocab.brands if rest.startswith(b + " ")), key=len, reverse=True):
        tail = rest[len(brand) + 1:].strip()
        if tail in vocab.types:
            return CarParts(prefix, colour, brand, tail)
    head, _, last = rest.rpartition(" ")
    if head and last in vocab.types:
        return CarParts(prefix, colour, head, last)
    return CarParts(prefix, colour, rest, None)


def add_car_fields(df: pd.DataFrame, vocab: CarVocabulary) -> pd.DataFrame:
    """A copy of `df` with `colour`, `brand`, `type` parsed from the car attributes (None: persons)."""
    out = df.copy()
    parts = [parse_car_text(a, vocab) if k == "car" else None for a, k in zip(df["attribute"], df["kind"])]
    for field in ("colour", "brand", "type"):
        out[field] = pd.Series([getattr(p, field) if p else None for p in parts], index=df.index,
                               dtype=object)
    return out



def query_kind(text: str) -> str:
    """'person' when the text names a person opener word (lowercase or Capitalised), else 'car'."""
    for word in _WORD.findall(text):
        if word.lower() in PERSON_WORDS and (word.islower() or word == word.capitalize()):
            return "person"
    return "car"


def read_queries(path: str | Path) -> pd.DataFrame:
    """test_text.txt (one query per line, kept exactly) -> DataFrame[text, kind, line], file order."""
    lines = read_lines(path)
    return pd.DataFrame({"text": lines, "kind": [query_kind(t) for t in lines],
                         "line": range(1, len(lines) + 1)}).astype({"line": "int64"})



def summary(df: pd.DataFrame, vocab: CarVocabulary) -> dict:
    counts = df["kind"].value_counts()
    return {"lines": len(df), "car": int(counts.get("car", 0)), "person": int(counts.get("person", 0)),
            "colours": list(vocab.colours), "types": list(vocab.types), "brands": list(vocab.brands)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.data.labels", description=__doc__.split("\n")[0])
    parser.add_argument("file", help="label file (image$attribute$text) or, with --queries, test_text.txt")
    parser.add_argument("--queries", action="store_true", help="FILE is a queries file (one text a line)")
    args = parser.parse_args(argv)
    try:
        if args.queries:
            df = read_queries(args.file)
            counts = df["kind"].value_counts()
            result = {"queries": len(df), "car": int(counts.get("car", 0)),
                      "person": int(counts.get("person", 0))}
        else:
            df = read_labels(args.file)
            result = summary(df, build_car_vocabulary(df))
            print(f"{'lines':>8} {'car':>8} {'person':>8} {'colours':>8} {'types':>8} {'brands':>8}")
            print(" ".join(f"{len(v) if isinstance(v, list) else v:>8}" for v in result.values()))
    except (LabelError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
