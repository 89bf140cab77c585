"""The demo images' scene and camera: "web" images (train, val) are sharp on a bright backdrop,
"surveillance" ones (test) on a cluttered road, with contrast loss, colour cast, blur and noise."""
from __future__ import annotations

import cv2
import numpy as np

RGB = tuple[int, int, int]


def jitter(rgb: RGB, rng: np.random.Generator, amount: int = 12) -> RGB:
    deltas = rng.integers(-amount, amount + 1, 3).tolist()
    return tuple(min(255, max(0, int(c) + d)) for c, d in zip(rgb, deltas))


def shade(rgb, factor: float) -> RGB:
    return tuple(min(255, max(0, int(int(c) * factor))) for c in rgb)


def contrast_outline(rgb) -> RGB:
    return shade(rgb, 0.55) if sum(rgb) > 150 else (90, 90, 95)


def background(h: int, w: int, domain: str, rng: np.random.Generator) -> np.ndarray:
    """Web: a bright plain or vertical-gradient backdrop. Surveillance: road grey, lane marks, clutter."""
    if domain == "web":
        top = rng.integers(170, 256, 3)
        bottom = top if rng.random() < 0.4 else rng.integers(170, 256, 3)
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        img = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).astype(np.uint8)
        return np.ascontiguousarray(img)
    grey = int(rng.integers(85, 135))
    img = np.empty((h, w, 3), np.uint8)
    img[:] = jitter((grey, grey, grey), rng, 8)
    for _ in range(int(rng.integers(2, 6))):  # stains, shadows, other objects at the edges
        x, y = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        x1, y1 = x + int(rng.integers(8, w // 2 + 9)), y + int(rng.integers(6, h // 2 + 7))
        cv2.rectangle(img, (x, y), (x1, y1), jitter((grey, grey, grey), rng, 40), -1)
    for _ in range(int(rng.integers(1, 3))):  # lane marks / kerbs
        y, mark = int(rng.integers(0, h)), (230, 230, 220) if rng.random() < 0.7 else (220, 190, 40)
        dash = int(rng.integers(10, 24))
        for x in range(-int(rng.integers(0, dash)), w, 2 * dash):
            cv2.line(img, (x, y), (x + dash, y + int(rng.integers(-2, 3))), mark, int(rng.integers(2, 4)))
    if rng.random() < 0.5:  # a pole or a wire
        x = int(rng.integers(0, w))
        lean = int(rng.integers(-w // 3, w // 3 + 1))
        cv2.line(img, (x, 0), (x + lean, h), jitter((70, 70, 70), rng, 30), 2)
    return img


def apply_domain(img: np.ndarray, domain: str, rng: np.random.Generator) -> np.ndarray:
    """The camera: web images stay clean; surveillance ones get contrast loss, cast, blur, noise."""
    if domain == "web":
        return img
    h, w = img.shape[:2]
    f = img.astype(np.float32)
    mean = f.mean()
    f = mean + (f - mean) * rng.uniform(0.6, 0.85)
    f *= rng.uniform(0.93, 1.07, 3).astype(np.float32)
    f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.5, 1.0))
    if rng.random() < 0.5:
        s = rng.uniform(0.55, 0.8)
        small = cv2.resize(f, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
        f = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    f += rng.normal(0, rng.uniform(4, 10), f.shape).astype(np.float32)
    return np.clip(f, 0, 255).astype(np.uint8)
