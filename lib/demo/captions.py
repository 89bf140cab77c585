"""Captions and attributes of the demo dataset, in the competition's exact grammar.

The phrase tables were read off the 10,000 real validation lines: every real person caption is one that
`caption_slots` allows (tested), variants about uniform within a group. Person vectors are drawn with
their real frequencies (`lib/demo/assets/person_vectors.csv`, made by `python -m tools.demo_assets`)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from lib.data.attributes import N_PERSON_BITS
from lib.data.captions import article

PERSON_TABLE = Path(__file__).resolve().parent / "assets" / "person_vectors.csv"

CAR_COLOURS: tuple[str, ...] = ("black", "blue", "green", "grey", "orange", "red", "white", "yellow")
# Brand -> plausible types with weights (buses from bus makers, heavy trucks from truck makers).
BRAND_TYPES: dict[str, dict[str, float]] = {
    "Audi": {"Sedan": 0.6, "SUV": 0.4},
    "BMW": {"Sedan": 0.55, "SUV": 0.45},
    "Chery": {"Sedan": 0.45, "SUV": 0.3, "Minivan": 0.25},
    "China-Moto": {"Sedan": 0.3, "Minivan": 0.35, "Microbus": 0.35},
    "Dongfeng": {"Truck": 0.4, "SUV": 0.2, "Minivan": 0.2, "Microbus": 0.2},
    "Golden Dragon": {"Bus": 0.6, "Microbus": 0.4},
    "Honda": {"Sedan": 0.5, "SUV": 0.3, "Minivan": 0.2},
    "JMC": {"Truck": 0.4, "Microbus": 0.3, "Minivan": 0.3},
    "MORRIS-GARAGE": {"Sedan": 0.6, "SUV": 0.4},
    "Volvo": {"Sedan": 0.35, "SUV": 0.3, "Bus": 0.15, "Truck": 0.2},
    "Yutong": {"Bus": 0.75, "Microbus": 0.25},
    "Balong Heavy Truck": {"Truck": 1.0},
}
CAR_BRANDS: tuple[str, ...] = tuple(sorted(BRAND_TYPES))
# Truck makers whose attribute is always the bare brand, as "Balong Heavy Truck" and "Hongyan" are in
# the real data. The shares are those of the 3,413 real val car lines.
BARE_BRANDS = frozenset({"Balong Heavy Truck"})
BARE_BRAND_SHARE = 54 / 3413
BARE_TYPE_SHARE = 503 / 3413  # "Truck." / "A Truck."
THIS_IS_SHARE = 1723 / 3413  # "This is a(n) ", else "A(n) "


def sample_car(rng: np.random.Generator) -> tuple[str, str, str]:
    """(colour, brand, type): colours uniform, bare-brand makers at their real share."""
    colour = CAR_COLOURS[rng.integers(len(CAR_COLOURS))]
    others = [b for b in CAR_BRANDS if b not in BARE_BRANDS]
    brand = (sorted(BARE_BRANDS)[rng.integers(len(BARE_BRANDS))] if rng.random() < BARE_BRAND_SHARE
             else others[rng.integers(len(others))])
    types, weights = zip(*BRAND_TYPES[brand].items())
    kind = types[rng.choice(len(types), p=np.array(weights) / sum(weights))]
    return colour, brand, kind


def car_label(colour: str, brand: str, kind: str, rng: np.random.Generator,
              full: bool = False) -> tuple[str, str]:
    """(attribute, caption) with a trailing period. full: colour + brand + type (queries, corpus); else the
    training form: the bare brand of a bare-brand maker, else a bare type or "colour Brand"."""
    if full:
        body = f"{colour} {brand} {kind}"
    elif brand in BARE_BRANDS:
        body = brand
    elif rng.random() < BARE_TYPE_SHARE / (1 - BARE_BRAND_SHARE):
        body = kind
    else:
        body = f"{colour} {brand}"
    art = article(body.split(" ")[0])
    prefix = f"This is {art} " if rng.random() < THIS_IS_SHARE else f"{art.capitalize()} "
    return f"{body}.", f"{prefix}{body}."


OPENERS = {  # by the Female bit
    0: ("A male pedestrian is someone who walks on foot, is ", "A male pedestrian who is ",
        "A pedestrian who is male is ", "A walking man who is "),
    1: ("A female pedestrian is someone who walks on foot, is ", "A female pedestrian who is ",
        "A pedestrian who is female is ", "A walking woman who is "),
}
AGES = {  # by the bit index of the one-hot age
    1: ("an elderly person over 60 years old", "aged 60 or older", "at least 60 years old", "aged over 60"),
    2: ("an adult person aged 18-60", "between 18 and 60 years old"),
    3: ("a minor", "age 18 or younger", "not an adult", "less than 18 years old"),
}
ORIENTATIONS = {4: ", with {his} body facing the camera", 5: ", and is standing sideways",
                6: ", with {his} body back to the camera"}
# Carried items in the caption's priority order: only the first one present is named.
ITEMS = {
    9: ("with a handbag", "carrying a handbag", "holding a handbag", "clutching a handbag"),
    10: ("with a shoulderbag", "has a shoulderbag", "is carrying a shoulder bag",
         "has a bag over the shoulder"),
    11: ("with a backpack", "carrying a backpack"),
    12: ("holds objects in front",),
}
SLEEVES = {
    13: ("a short sleeve shirt", "a shirt with short sleeves", "a tee shirt with short sleeves"),
    14: ("a long sleeve shirt", "a shirt with long sleeves", "a tee shirt with long sleeves"),
}
PATTERNS = {15: ("with an upper stripe",), 16: ("with an upper logo", "with a logo on the upper"),
            17: ("with an upper plaid", "with a plaid on the upper"),
            18: ("with an upper splice", "with a splice on the upper")}
SKIRTS = ("and in a skirt or dress", "and wearing skirt or dress")
HAT, GLASSES, LONGCOAT = ("a hat",), ("glasses",), ("a longcoat", "a coat that is long")
BOOTS = ("boots",)  # not one of the 21 bits, but it switches sentence 2 to the accessory form


def _one_hot(vector, bits: range, what: str) -> int:
    on = [i for i in bits if vector[i]]
    if len(on) != 1:
        raise ValueError(f"person vector {list(vector)}: {what} must be one-hot, got bits {on}")
    return on[0]


def caption_slots(vector, boots: bool) -> list[tuple[str, ...]]:
    """The caption as a sequence of slots, each a tuple of interchangeable phrases."""
    v = [int(b) for b in vector]
    if len(v) != N_PERSON_BITS or any(b not in (0, 1) for b in v):
        raise ValueError(f"person vector must be {N_PERSON_BITS} bits of 0/1, got {vector}")
    if sum(v[15:19]) > 1:
        raise ValueError(f"person vector {v}: more than one upper pattern")
    his, he = ("her", "She") if v[0] else ("his", "He")
    orient = _one_hot(v, range(4, 7), "orientation")
    slots = [OPENERS[v[0]], AGES[_one_hot(v, range(1, 4), "age")],
             (ORIENTATIONS[orient].format(his=his),)]
    item = next((i for i in ITEMS if v[i]), None)
    if item is not None:
        slots.append(tuple(" and " + p for p in ITEMS[item]))
    slots.append((f". {he} is ",))
    sleeve = _one_hot(v, range(13, 15), "sleeve")
    accessories = [p for p, on in ((HAT, v[7]), (GLASSES, v[8]), (LONGCOAT, v[19]), (BOOTS, boots)) if on]
    if accessories:
        slots.append(("wearning ",))
        for k, phrases in enumerate(accessories):
            slots.append(tuple(("," if k else "") + p for p in phrases))
    else:
        slots.append(tuple("in " + p for p in SLEEVES[sleeve]))
        pattern = next((i for i in PATTERNS if v[i]), None)
        if pattern is not None:
            slots.append(tuple(" " + p for p in PATTERNS[pattern]))
        if v[20]:
            slots.append(tuple(" " + p for p in SKIRTS))
    slots.append((".",))
    return slots


def person_caption(vector, boots: bool, rng: np.random.Generator) -> str:
    """A caption for a 21-bit vector (plus the hidden boots flag), phrase variants uniform."""
    return "".join(s[rng.integers(len(s))] if len(s) > 1 else s[0] for s in caption_slots(vector, boots))


def person_attribute(vector) -> str:
    return ",".join(str(int(b)) for b in vector)


@lru_cache(maxsize=2)
def person_vector_table(path: Path = PERSON_TABLE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors uint8 [n, 21], probability [n], boots probability given the vector [n])."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    keys, counts, boots = zip(*(line.split(",") for line in lines))
    vectors = np.array([[int(c) for c in k] for k in keys], dtype=np.uint8)
    counts = np.array(counts, dtype=np.float64)
    return vectors, counts / counts.sum(), np.array(boots, dtype=np.float64) / counts


def sample_persons(rng: np.random.Generator, n: int) -> list[tuple[tuple[int, ...], bool]]:
    """n (21-bit vector, boots) pairs drawn with the real validation frequencies."""
    vectors, p, p_boots = person_vector_table()
    rows = rng.choice(len(p), size=n, p=p)
    boots = rng.random(n) < p_boots[rows]
    return [(tuple(int(b) for b in vectors[k]), bool(s)) for k, s in zip(rows, boots)]
