"""lib.data.attributes: the closed vocabularies are the real data's."""
from lib.data import labels
from lib.data.attributes import CAR_TYPES, N_PERSON_BITS, PERSON_ATTRIBUTES
from tests import FIXTURES


def test_car_types_are_the_real_validation_types():
    val = labels.read_labels(FIXTURES / "val_label.txt")
    vocabulary = labels.build_car_vocabulary(val)  # once: building it per caption took 22 s
    bare = {labels.parse_car_text(a, vocabulary).type for a in val.loc[val["kind"] == "car", "attribute"]}
    assert set(CAR_TYPES) == bare - {None} and list(CAR_TYPES) == sorted(CAR_TYPES)


def test_twenty_one_person_attributes_gender_first():
    assert N_PERSON_BITS == 21 == len(set(PERSON_ATTRIBUTES)) and PERSON_ATTRIBUTES[0] == "Female"
    assert PERSON_ATTRIBUTES[1:4] == ("AgeOver60", "Age18-60", "AgeLess18")
    assert PERSON_ATTRIBUTES[-1] == "Skirt&Dress"
