"""The organisers' car captions: "{prefix}{colour} {brand} {type}." with any field absent ("A Truck.").

The article goes by the next word's first LETTER, not its sound: in the 3,413 real val car captions
"An" occurs only before "orange" (250 times), and a bare type is "A SUV." (95 times), never "An SUV."."""
from __future__ import annotations

import re

# Longest first, so that "This is an " is never read as "This is a " + "n...".
CAPTION_PREFIXES: tuple[str, ...] = ("This is an ", "This is a ", "An ", "A ")
_ARTICLE_END = re.compile(r"(^|\s)(an?|An?) $")  # a prefix ending in its article: "A ", "This is an "


def strip_period(text: str) -> str:
    """Without surrounding spaces and trailing periods ("white Audi." == "white Audi")."""
    return text.strip().rstrip(".").rstrip()


def drop_final_period(text: str) -> str:
    """Without surrounding spaces and ONE final period (a text without one is kept)."""
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def split_prefix(text: str) -> tuple[str, str]:
    """(caption prefix, rest) with the trailing periods and outer spaces of the rest removed."""
    body = strip_period(text)
    for prefix in CAPTION_PREFIXES:
        if body.startswith(prefix):
            return prefix, body[len(prefix):].strip()
    return "", body


def article(word: str) -> str:
    """"an" before a vowel letter, else "a": the organisers' rule (see the module docstring)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def fit_article(prefix: str, first_word: str) -> str:
    """The prefix with its final article, if any, agreeing with `first_word` ("A " + "orange" -> "An ")."""
    found = _ARTICLE_END.search(prefix)
    if not found:
        return prefix
    new = article(first_word)
    return prefix[:found.start(2)] + (new.capitalize() if found.group(2)[0] == "A" else new) + " "


def compose_car_caption(prefix: str, colour: str | None, brand: str | None, type_: str | None,
                        period: bool = True) -> str:
    """"{prefix}{colour} {brand} {type}" with absent fields skipped, the article fitted, "." if `period`."""
    words = [w for w in (colour, brand, type_) if w]
    if not words:
        raise ValueError(f"a car caption needs a colour, brand or type (prefix {prefix!r})")
    return fit_article(prefix, words[0]) + " ".join(words) + ("." if period else "")
