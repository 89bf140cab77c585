"""The competition's closed sets: car types and the 21 person attributes (../shared/spec/persons.md).
Car colours and brands are open, derived from the data (lib.data.labels.build_car_vocabulary)."""
from __future__ import annotations

CAR_TYPES: tuple[str, ...] = ("Bus", "Microbus", "Minivan", "SUV", "Sedan", "Truck")
# The person attribute vector, bit by bit (index 0 is the gender bit the relevance rule compares).
PERSON_ATTRIBUTES: tuple[str, ...] = (
    "Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses",
    "HandBag", "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve",
    "UpperStripe", "UpperLogo", "UpperPlaid", "UpperSplice", "LongCoat", "Skirt&Dress",
)
N_PERSON_BITS = len(PERSON_ATTRIBUTES)
