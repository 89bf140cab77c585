"""lib.demo.scene: bright web backdrops, grey cluttered roads, and a camera that blurs and adds noise."""
import cv2
import numpy as np

from lib.demo.scene import apply_domain, background, shade


def rng(seed=0):
    return np.random.default_rng(seed)


def flat_share(img: np.ndarray) -> float:
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return float((abs(cv2.Laplacian(grey, cv2.CV_32F)) < 2).mean())


def test_web_backgrounds_are_bright_and_surveillance_roads_grey():
    web, road = background(40, 90, "web", rng()), background(40, 90, "surveillance", rng())
    assert web.shape == road.shape == (40, 90, 3) and web.dtype == np.uint8
    assert web.min() >= 170 and road.mean() < web.mean()


def test_the_surveillance_camera_adds_noise_and_web_stays_clean():
    img = background(60, 120, "web", rng(1))
    assert apply_domain(img, "web", rng(2)) is img
    seen = apply_domain(img, "surveillance", rng(2))
    assert flat_share(img) > flat_share(seen) + 0.3
    assert np.array_equal(seen, apply_domain(img, "surveillance", rng(2)))  # a function of the generator


def test_shade_stays_in_range():
    assert shade((200, 100, 0), 2.0) == (255, 200, 0) and shade((10, 10, 10), 0.5) == (5, 5, 5)
