"""Prompts: how car captions are composed (training) and query texts rewritten (query policies).

Car captions: `compose_car_caption` writes "{prefix}{colour} {brand} {type}" as the organisers do,
with the prefix's article agreeing with the new first word (`fit_article`); the zero-shot
augmentation (lib.augment) completes training captions with it, so a completed caption reads like
a test query ("This is a grey Chery Sedan.").

The reference solution (A3R) tried two rewrites of the CAR queries at inference:
- `strip_prefix` (its best A-board variant): "This is a grey Chery Sedan." -> "grey Chery Sedan";
- `surveillance` (its last variant): " image taken by traffic surveillance cameras" appended, because
  the train images come from the web and the test images from surveillance cameras.
Person queries are long descriptive sentences that the model was trained on as they are; every
policy leaves them unchanged.

The final period under `surveillance`: the reference dropped it before appending
(`line.strip()[:-1] + suffix`), giving "This is a grey Chery Sedan image taken by traffic
surveillance cameras": one noun phrase ("a ... Sedan image taken by ..."), which a period in the
middle ("Sedan. image taken by ...") would break. We do the same, and keep the prefix. (The
reference also cut the last character of every person query; we do not: persons are unchanged.)
"""
from __future__ import annotations

import re
from collections.abc import Sequence

POLICIES = ("none", "strip_prefix", "surveillance")
KINDS = ("car", "person")
# The caption openers seen in the organisers' car captions and queries; longest first so that
# "This is an " is never read as "This is a " + "n...".
CAR_PREFIXES = ("This is an ", "This is a ", "An ", "A ")
SURVEILLANCE_SUFFIX = " image taken by traffic surveillance cameras"
_ARTICLE_END = re.compile(r"(^|\s)(an?|An?) $")  # a prefix ending in its article: "A ", "This is an "


def article(word: str) -> str:
    """"an" before a vowel LETTER, else "a": the organisers' rule (by letter, not sound).

    In the 3,413 real val car captions "An"/"This is an" occur only before "orange" (250 times), and
    a bare type is "A SUV." (95 times), never "An SUV.".
    """
    return "an" if word[:1].lower() in "aeiou" else "a"


def fit_article(prefix: str, first_word: str) -> str:
    """The prefix with its article agreeing with `first_word`; case kept ("A " + "orange" -> "An ").

    A prefix without a final article ("" or anything else) is returned as it is.
    """
    found = _ARTICLE_END.search(prefix)
    if not found:
        return prefix
    new = article(first_word)
    new = new.capitalize() if found.group(2)[0] == "A" else new
    return prefix[:found.start(2)] + new + " "


def compose_car_caption(prefix: str, colour: str | None, brand: str | None, type_: str | None,
                        period: bool = True) -> str:
    """"{prefix}{colour} {brand} {type}" with absent fields skipped, the article fitted, "." if `period`."""
    words = [w for w in (colour, brand, type_) if w]
    if not words:
        raise ValueError(f"a car caption needs a colour, brand or type (prefix {prefix!r})")
    return fit_article(prefix, words[0]) + " ".join(words) + ("." if period else "")


def drop_final_period(text: str) -> str:
    """The text without surrounding spaces and one final period (a text without one is kept)."""
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def strip_prefix(text: str) -> str:
    """"This is a grey Chery Sedan." -> "grey Chery Sedan": drops one leading opener and the final period."""
    body = drop_final_period(text)
    for prefix in CAR_PREFIXES:
        if body.startswith(prefix):
            return body[len(prefix):].strip()
    return body


def surveillance(text: str) -> str:
    """"This is a grey Sedan." -> "This is a grey Sedan image taken by traffic surveillance cameras"."""
    return drop_final_period(text) + SURVEILLANCE_SUFFIX


_CAR_REWRITES = {"none": lambda text: text, "strip_prefix": strip_prefix, "surveillance": surveillance}


def apply_policy(texts: Sequence[str], kinds: Sequence[str], policy: str) -> list[str]:
    """Rewrite the car queries of `texts` by `policy` (see POLICIES); person queries stay as they are.

    `kinds[i]` is 'car' or 'person' (lib.labels.read_queries's `kind` column). The output has the
    same length and order as `texts`; the original texts are what a submission must quote.
    """
    if policy not in _CAR_REWRITES:
        raise ValueError(f"unknown query policy {policy!r}; choose one of {', '.join(POLICIES)}")
    texts, kinds = list(texts), list(kinds)
    if len(texts) != len(kinds):
        raise ValueError(f"{len(texts)} query texts but {len(kinds)} kinds: one kind per query")
    bad = [(i, kind) for i, kind in enumerate(kinds) if kind not in KINDS]
    if bad:
        i, kind = bad[0]
        raise ValueError(f"query {i + 1} ({texts[i]!r}) has kind {kind!r}; kinds are {', '.join(KINDS)}")
    rewrite = _CAR_REWRITES[policy]
    return [rewrite(text) if kind == "car" else text for text, kind in zip(texts, kinds)]
