"""Query policies: how the car queries are rewritten before they are encoded.

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

from collections.abc import Sequence

from lib.data.captions import CAPTION_PREFIXES, drop_final_period

POLICIES = ("none", "strip_prefix", "surveillance")
KINDS = ("car", "person")
SURVEILLANCE_SUFFIX = " image taken by traffic surveillance cameras"


def strip_prefix(text: str) -> str:
    """"This is a grey Chery Sedan." -> "grey Chery Sedan": drops one leading opener and the final period."""
    body = drop_final_period(text)
    for prefix in CAPTION_PREFIXES:
        if body.startswith(prefix):
            return body[len(prefix):].strip()
    return body


def surveillance(text: str) -> str:
    """"This is a grey Sedan." -> "This is a grey Sedan image taken by traffic surveillance cameras"."""
    return drop_final_period(text) + SURVEILLANCE_SUFFIX


_CAR_REWRITES = {"none": lambda text: text, "strip_prefix": strip_prefix, "surveillance": surveillance}


def apply_policy(texts: Sequence[str], kinds: Sequence[str], policy: str) -> list[str]:
    """Rewrite the car queries of `texts` by `policy` (see POLICIES); person queries stay as they are.

    `kinds[i]` is 'car' or 'person' (lib.data.labels.read_queries's `kind` column). The output has
    the same length and order as `texts`; the original texts are what a submission must quote.
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
