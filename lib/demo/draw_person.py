"""The demo's pedestrians: a tall figure whose 21 attributes (and boots) are visible. Sizes are pixels of
a ~52 x 128 image (~26 x 64 at the model's input), where every cue a caption names is at least ~6 px wide.
Gender: long hair, a narrower torso; age: a small figure (minor), white hair and a cane (elderly)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lib.demo.scene import RGB, apply_domain, background, jitter, shade

UPPER = [(200, 30, 35), (30, 70, 190), (35, 140, 60), (240, 210, 40), (240, 240, 240), (30, 30, 35),
         (120, 120, 125), (130, 50, 160), (235, 110, 170), (20, 150, 160), (20, 35, 90)]
LOWER = [(45, 65, 120), (30, 30, 35), (110, 110, 115), (175, 155, 110), (235, 235, 230), (40, 85, 50),
         (95, 60, 35)]
SKIN = [(250, 215, 185), (235, 190, 150), (200, 150, 110), (150, 100, 65), (100, 65, 40)]
HAIR = [(20, 15, 10), (45, 30, 20), (85, 55, 30), (40, 40, 40), (150, 110, 60)]
OLD_HAIR = [(235, 235, 235), (200, 200, 200), (175, 175, 180)]
BAGS = [(110, 65, 30), (25, 25, 25), (150, 20, 30), (200, 170, 120), (25, 45, 110), (235, 235, 235)]
OBJECTS = [(190, 150, 95), (245, 245, 240), (200, 40, 40), (60, 120, 200)]  # boxes, parcels, bags
SHOE, BOOT, EYE, GLASSES = (25, 25, 25), (45, 30, 20), (20, 20, 20), (15, 15, 15)
HATS = [(200, 30, 35), (20, 35, 90), (25, 25, 25), (240, 240, 240), (215, 190, 140), (240, 200, 30)]


def _far(colour: RGB, palette: list[RGB], rng: np.random.Generator, min_dist: float = 170) -> RGB:
    """A palette colour clearly different from `colour` (patterns, splice halves, bags)."""
    far = [c for c in palette if np.linalg.norm(np.subtract(c, colour)) >= min_dist]
    return far[rng.integers(len(far))] if far else (255 - colour[0], 255 - colour[1], 255 - colour[2])


def _rect(img, x0, y0, x1, y1, colour) -> None:
    cv2.rectangle(img, (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1))), colour, -1)


def _poly(img, points, colour) -> None:
    cv2.fillPoly(img, [np.array(points, np.float64).round().astype(np.int32)], colour)


def _pattern(img, v, x0, y0, x1, y1, base: RGB, rng) -> None:
    """Upper stripe / logo / plaid / splice, drawn bold over the torso box."""
    x0, y0, x1, y1 = (int(round(t)) for t in (x0, y0, x1, y1))
    second = _far(base, UPPER, rng)
    if v[15]:  # stripes: 5 px bands every 10 px
        for y in range(y0 + 3, y1 - 2, 10):
            _rect(img, x0, y, x1, min(y + 4, y1), second)
    elif v[16]:  # logo: a big shape in the middle of the chest
        cx, cy, s = (x0 + x1) // 2, y0 + (y1 - y0) * 2 // 5, max(5, (x1 - x0) // 3)
        if rng.random() < 0.5:
            cv2.circle(img, (cx, cy), s, second, -1, cv2.LINE_AA)
        else:
            _rect(img, cx - s, cy - s, cx + s, cy + s, second)
    elif v[17]:  # plaid: a grid of 3 px lines every 8 px
        for x in range(x0 + 2, x1, 8):
            _rect(img, x, y0, x + 2, y1, second)
        for y in range(y0 + 3, y1, 8):
            _rect(img, x0, y, x1, y + 2, second)
    elif v[18]:  # splice: two-tone halves
        if rng.random() < 0.5:
            _rect(img, (x0 + x1) / 2, y0, x1, y1, second)
        else:
            _rect(img, x0, (y0 + y1) / 2, x1, y1, second)


@dataclass
class Figure:
    """Where the parts of one figure go (pixels) and what colour the free choices got."""

    v: list[int]
    boots: bool
    view: str  # front | side | back
    face_dir: int  # side view: +1 looks right, -1 left
    cx: float  # body axis
    gy: float  # ground (soles)
    hf: float  # figure height
    r: float  # head radius
    hy: float  # head centre
    sy: float  # shoulders
    wy: float  # waist
    ky: float  # knees (skirt and coat hems)
    tw: float  # torso width
    aw: float  # arm width
    skin: RGB
    upper: RGB
    lower: RGB
    hair: RGB
    bag: RGB
    thing: RGB  # an object held in front
    tx0 = property(lambda self: self.cx - self.tw / 2)  # torso edges
    tx1 = property(lambda self: self.cx + self.tw / 2)


def _figure(v: list[int], boots: bool, h: int, w: int, rng: np.random.Generator) -> Figure:
    """Proportions by age and gender (minors small with big heads), random colours for the rest."""
    view = "front" if v[4] else "side" if v[5] else "back"
    gy = h - int(rng.integers(2, 6))
    hf = h * (rng.uniform(0.66, 0.74) if v[3] else rng.uniform(0.87, 0.94))
    r = hf * (0.095 if v[3] else 0.072)
    hy = gy - hf + r
    sy = hy + r + 0.025 * hf
    wy = sy + 0.3 * hf
    tw = w * (0.38 if view == "side" else (0.44 if v[0] else 0.52)) * (0.85 if v[3] else 1.0)
    return Figure(
        v, boots, view, 1 if rng.random() < 0.5 else -1, w / 2 + rng.uniform(-2.5, 2.5),
        gy, hf, r, hy, sy, wy,
        wy + rng.uniform(0.45, 0.6) * (gy - wy), tw, max(6.0, w * 0.14),
        jitter(SKIN[rng.integers(len(SKIN))], rng, 8), jitter(UPPER[rng.integers(len(UPPER))], rng, 10),
        jitter(LOWER[rng.integers(len(LOWER))], rng, 10),
        OLD_HAIR[rng.integers(len(OLD_HAIR))] if v[1] else HAIR[rng.integers(len(HAIR))],
        BAGS[rng.integers(len(BAGS))], OBJECTS[rng.integers(len(OBJECTS))])


def _behind(img, f: Figure) -> None:
    """What the body hides in part: long hair, a side-view backpack, an object held (seen from behind)."""
    if f.v[0] and f.view != "back":
        hx = f.cx - f.face_dir * f.r * 0.5 if f.view == "side" else f.cx
        _rect(img, hx - f.r - 2, f.hy - f.r * 0.4, hx + f.r + 2, f.sy + 0.1 * f.hf, f.hair)
    if f.v[11] and f.view == "side":
        bx = f.tx0 if f.face_dir > 0 else f.tx1
        _rect(img, bx - f.face_dir * 11, f.sy + 3, bx, f.sy + 0.22 * f.hf, f.bag)
    if f.v[12] and f.view == "back":
        _rect(img, f.tx0 - 6, f.wy - 0.12 * f.hf, f.tx1 + 6, f.wy - 0.03 * f.hf, f.thing)


def _legs(img, f: Figure, rng) -> None:
    """Trousers (or bare legs / tights under a skirt), shoes, boots; a stride in the side view."""
    legs = (f.skin if rng.random() < 0.7 else (40, 35, 40)) if f.v[20] else f.lower
    boot_top = f.gy - 0.17 * f.hf
    if f.view == "side":
        stride, lw = rng.uniform(3, 7), f.tw * 0.45
        for d in (-1, 1):
            foot = f.cx + d * stride
            _poly(img, [(f.cx - lw / 2, f.wy), (f.cx + lw / 2, f.wy), (foot + lw / 2, f.gy - 3),
                        (foot - lw / 2, f.gy - 3)], shade(legs, 0.85 if d < 0 else 1))
            _rect(img, foot - lw / 2, f.gy - 4, foot + lw / 2 + f.face_dir * 3, f.gy, SHOE)
            if f.boots:
                _rect(img, foot - lw / 2 - 1, boot_top, foot + lw / 2 + 1, f.gy, BOOT)
        return
    gap = max(2.0, f.tw * 0.1)
    for x0, x1 in ((f.tx0 + 1, f.cx - gap / 2), (f.cx + gap / 2, f.tx1 - 1)):
        _rect(img, x0, f.wy, x1, f.gy - 3, legs)
        _rect(img, x0 - 1, f.gy - 4, x1 + 1, f.gy, SHOE)
        if f.boots:
            _rect(img, x0 - 1, boot_top, x1 + 1, f.gy, BOOT)


def _clothes(img, f: Figure, rng) -> None:
    """Skirt or dress, long coat, the torso with its pattern, backpack or its straps."""
    if f.v[20]:
        colour = f.upper if rng.random() < 0.4 else jitter(UPPER[rng.integers(len(UPPER))], rng, 10)
        flare = f.tw * (0.2 if f.view == "side" else 0.18)
        _poly(img, [(f.tx0, f.wy - 2), (f.tx1, f.wy - 2), (f.tx1 + flare, f.ky), (f.tx0 - flare, f.ky)],
              colour)
    if f.v[19]:
        flare = f.tw * 0.12
        _poly(img, [(f.tx0, f.sy), (f.tx1, f.sy), (f.tx1 + flare, f.ky + 4), (f.tx0 - flare, f.ky + 4)],
              f.upper)
        cv2.line(img, (int(f.cx), int(f.wy)), (int(f.cx), int(f.ky + 3)), shade(f.upper, 0.6), 1)
    _rect(img, f.tx0, f.sy, f.tx1, f.wy, f.upper)
    _pattern(img, f.v, f.tx0, f.sy, f.tx1, f.wy, f.upper, rng)
    if f.v[11] and f.view == "back":  # a backpack covers a third of the back
        _rect(img, f.cx - f.tw * 0.36, f.sy + 3, f.cx + f.tw * 0.36, f.sy + 0.22 * f.hf, f.bag)
        _rect(img, f.cx - f.tw * 0.25, f.sy + 0.14 * f.hf, f.cx + f.tw * 0.25, f.sy + 0.21 * f.hf,
              shade(f.bag, 0.7))
    if f.v[11] and f.view == "front":  # its straps over the shoulders
        strap = _far(f.upper, BAGS + [(25, 25, 25)], rng, 120)
        for x in (f.tx0 + f.tw * 0.18, f.tx1 - f.tw * 0.18 - 4):
            _rect(img, x, f.sy, x + 4, f.sy + 0.2 * f.hf, strap)


def _arms(img, f: Figure, rng) -> list[tuple[float, float]]:
    """Arms with sleeves in the upper colour (short: skin forearms); returns the hands."""
    xs = [f.cx - f.aw / 2 + f.face_dir * 2] if f.view == "side" else [f.tx0 - f.aw + 1, f.tx1 - 1]
    swing, top, end = rng.uniform(-3, 3), f.sy + 1, f.wy + 0.08 * f.hf
    sleeve_end = end if f.v[14] else f.sy + 0.07 * f.hf
    for x in xs:
        _poly(img, [(x, top), (x + f.aw, top), (x + f.aw + swing, end), (x + swing, end)], f.skin)
        _poly(img, [(x, top), (x + f.aw, top), (x + f.aw + swing * 0.3, sleeve_end),
                    (x + swing * 0.3, sleeve_end)], shade(f.upper, 0.92))
        _rect(img, x + swing, end, x + f.aw + swing, end + 4, f.skin)
    return [(x + f.aw / 2 + swing, end + 2) for x in xs]


def _carried(img, f: Figure, hands, rng) -> None:
    """Every carried item that is 1 (the caption names only the first), and an old person's cane."""
    if f.v[12] and f.view != "back":  # an object held in front of the belly
        ow, oy = f.tw * 0.8, f.wy - 0.12 * f.hf
        ox = f.cx - ow / 2 + (f.face_dir * f.tw * 0.45 if f.view == "side" else 0)
        _rect(img, ox, oy, ox + ow, oy + 0.09 * f.hf, f.thing)
    if f.v[10]:  # shoulder bag: a strap across the body, the bag at the opposite hip
        s = -1 if rng.random() < 0.5 else 1
        bx = f.cx - (f.face_dir if f.view == "side" else s) * (f.tw / 2 + 2)
        cv2.line(img, (int(f.cx + s * f.tw * 0.4), int(f.sy)), (int(bx), int(f.wy - 0.02 * f.hf)),
                 shade(f.bag, 0.6), 4)
        _rect(img, bx - 7, f.wy - 0.05 * f.hf, bx + 7, f.wy + 0.06 * f.hf, f.bag)
    if f.v[9]:  # handbag hanging from a hand
        hx, hy = hands[rng.integers(len(hands))]
        cv2.line(img, (int(hx - 3), int(hy + 3)), (int(hx), int(hy - 2)), shade(f.bag, 0.5), 2)
        _rect(img, hx - 8, hy + 2, hx + 8, hy + 0.11 * f.hf, f.bag)
    if f.v[1] and rng.random() < 0.7:  # a cane
        hx, hy = hands[-1]
        cv2.line(img, (int(hx), int(hy)), (int(hx + rng.uniform(-3, 3)), int(f.gy)), (90, 60, 35), 3)


def _head(img, f: Figure, rng) -> None:
    """Head by view (face with eyes / all hair / profile with a nose), then glasses and hat."""
    r, hy, d = f.r, f.hy, f.face_dir
    c = (int(round(f.cx + (d if f.view == "side" else 0))), int(round(hy)))
    rr = int(round(r))
    _rect(img, f.cx - r * 0.35, hy + r * 0.6, f.cx + r * 0.35, f.sy + 1, f.skin)  # neck
    cv2.circle(img, c, rr, f.hair if f.view == "back" else f.skin, -1, cv2.LINE_AA)
    if f.view == "back" and f.v[0]:
        _rect(img, f.cx - r - 2, hy, f.cx + r + 2, f.sy + 0.12 * f.hf, f.hair)
    elif f.view == "front":
        cv2.ellipse(img, c, (rr, rr), 0, 180, 360, f.hair, -1, cv2.LINE_AA)
        for e in (-1, 1):
            _rect(img, c[0] + e * r * 0.42 - 1, hy + r * 0.05, c[0] + e * r * 0.42 + 1, hy + r * 0.3, EYE)
        _rect(img, c[0] - r * 0.3, hy + r * 0.6, c[0] + r * 0.3, hy + r * 0.6 + 1, (150, 60, 60))
    elif f.view == "side":  # hair on the top and the back of the head, a nose, one eye
        start = 90 if d > 0 else 180
        cv2.ellipse(img, c, (rr, rr), 0, start, start + 270, f.hair, -1, cv2.LINE_AA)
        _poly(img, [(c[0] + d * r * 0.9, hy - r * 0.1), (c[0] + d * (r + 3), hy + r * 0.3),
                    (c[0] + d * r * 0.8, hy + r * 0.4)], f.skin)
        _rect(img, c[0] + d * r * 0.5 - 1, hy + r * 0.05, c[0] + d * r * 0.5 + 1, hy + r * 0.3, EYE)
    if f.v[8]:  # glasses: a dark band over the eyes (only the temples from behind)
        band = max(3.0, r * 0.4)
        if f.view == "front":
            _rect(img, c[0] - r, hy - band / 3, c[0] + r, hy + band * 2 / 3, GLASSES)
        elif f.view == "side":
            x0, x1 = sorted((c[0], c[0] + d * (r + 1)))
            _rect(img, x0, hy - band / 3, x1, hy + band * 2 / 3, GLASSES)
        else:
            _rect(img, c[0] - r, hy, c[0] + r, hy + 1, GLASSES)
    if f.v[7]:  # hat: a crown and a wide brim
        hat = _far(f.hair, HATS, rng, 110)
        _rect(img, c[0] - r * 0.95, hy - r * 1.35, c[0] + r * 0.95, hy - r * 0.3, hat)
        _rect(img, c[0] - r - 4, hy - r * 0.45, c[0] + r + 4, hy - r * 0.45 + 3, shade(hat, 0.8))


def draw_person(vector, boots: bool, domain: str, rng: np.random.Generator) -> np.ndarray:
    """A tall image (0.36-0.46 as wide as high) of a pedestrian with these attributes; RGB uint8."""
    h = int(rng.integers(112, 137))
    w = int(round(h * rng.uniform(0.36, 0.46)))
    img = background(h, w, domain, rng)
    f = _figure([int(b) for b in vector], bool(boots), h, w, rng)
    _behind(img, f)
    _legs(img, f, rng)
    _clothes(img, f, rng)
    _carried(img, f, _arms(img, f, rng), rng)
    _head(img, f, rng)
    return apply_domain(img, domain, rng)
