"""lib.demo.draw_person: tall pedestrians; an attribute bit changes the drawing where it should."""
import numpy as np

from lib.data.attributes import PERSON_ATTRIBUTES
from lib.demo.draw_person import draw_person

BASE = [0] * 21
BASE[PERSON_ATTRIBUTES.index("Age18-60")] = BASE[PERSON_ATTRIBUTES.index("Front")] = 1
BASE[PERSON_ATTRIBUTES.index("ShortSleeve")] = 1


def person(**bits) -> np.ndarray:
    v = list(BASE)
    for name, value in bits.items():
        v[PERSON_ATTRIBUTES.index(name)] = value
    return draw_person(v, False, "web", np.random.default_rng(3))


def test_persons_are_tall_rgb_and_deterministic():
    img = person()
    h, w, c = img.shape
    assert c == 3 and img.dtype == np.uint8 and h > 2 * w
    assert np.array_equal(img, person())


def test_a_hat_changes_the_head_and_not_the_feet():
    plain, hat = person(), person(Hat=1)
    h = plain.shape[0]
    changed = np.abs(plain.astype(int) - hat.astype(int)).max(axis=2) > 0
    assert changed[: h // 4].any() and not changed[-h // 5:].any()
