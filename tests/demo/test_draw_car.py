"""lib.demo.draw_car: wide cars whose body shows the caption's colour, the same image for the same seed."""
import numpy as np
import pytest

from lib.demo.draw_car import ASPECT, CAR_RGB, draw_car


def dominant_distance(img: np.ndarray, rgb) -> float:
    """The share of pixels within 40 of the colour (per channel)."""
    return float((np.abs(img.astype(int) - np.array(rgb)).max(axis=2) < 40).mean())


@pytest.mark.parametrize("kind", sorted(ASPECT))
def test_cars_are_wide_and_their_body_shows_the_colour(kind):
    img = draw_car("red", "Audi", kind, "web", np.random.default_rng(0))
    h, w, c = img.shape
    assert c == 3 and img.dtype == np.uint8 and w > 1.25 * h
    assert dominant_distance(img, CAR_RGB["red"]) > 0.15  # the body is the largest area
    assert dominant_distance(img, CAR_RGB["blue"]) < 0.05


def test_the_same_generator_draws_the_same_car():
    a = draw_car("blue", "BMW", "SUV", "surveillance", np.random.default_rng(5))
    b = draw_car("blue", "BMW", "SUV", "surveillance", np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, draw_car("blue", "BMW", "SUV", "surveillance", np.random.default_rng(6)))
