"""How car queries are rewritten before encoding (persons never are): A3R's two inference variants,
`strip_prefix` (its best on board A) and `surveillance` (web train images, camera test images). As
A3R, `surveillance` drops the final period, keeping one noun phrase; unlike it, persons keep theirs."""
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
    """Rewrite the car queries by `policy`, `kinds` from lib.data.labels.read_queries; the original
    texts are what a submission must quote."""
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
