"""The demo's cars, in OpenCV primitives. Every cue a caption can name survives the resize to 64 px (body
colour: the largest area; type: the silhouette; brand: a two-colour badge of ~0.3 body heights); what no
caption names (background, scale, offsets) is random, so a model has to read the attribute."""
from __future__ import annotations

import cv2
import numpy as np

from lib.demo.scene import RGB, apply_domain, background, contrast_outline, jitter, shade

CAR_RGB: dict[str, RGB] = {
    "black": (28, 28, 32), "blue": (30, 75, 205), "green": (35, 150, 55), "grey": (130, 130, 134),
    "orange": (245, 130, 25), "red": (205, 28, 28), "white": (242, 242, 242), "yellow": (245, 215, 35),
}
# Brand badge: plate shape, emblem shape, emblem colour, plate colour (every colour pair distinct).
BADGES: dict[str, tuple[str, str, RGB, RGB]] = {
    "Audi": ("oval", "rings", (225, 225, 225), (15, 15, 15)),
    "BMW": ("circle", "quarters", (40, 120, 235), (250, 250, 250)),
    "Chery": ("circle", "triangle", (250, 250, 250), (200, 20, 40)),
    "China-Moto": ("square", "chevron", (215, 20, 20), (250, 250, 250)),
    "Dongfeng": ("circle", "cross", (210, 20, 20), (255, 215, 0)),
    "Golden Dragon": ("square", "star", (255, 205, 0), (130, 0, 10)),
    "Honda": ("square", "H", (215, 20, 20), (195, 195, 200)),
    "JMC": ("oval", "bars", (250, 250, 250), (0, 60, 170)),
    "MORRIS-GARAGE": ("octagon", "octagon", (250, 250, 250), (0, 105, 50)),
    "Volvo": ("circle", "arrow", (90, 220, 255), (15, 25, 90)),
    "Yutong": ("square", "diamond", (20, 60, 200), (255, 140, 0)),
    "Balong Heavy Truck": ("square", "square", (255, 230, 40), (120, 30, 140)),
}
# Vehicle length / height by type, and the side silhouettes facing right: (u, v) with u along the
# vehicle (0 rear, 1 front) and v up from the ground (0) to the roof (1).
ASPECT = {"Bus": 2.6, "Truck": 2.35, "Sedan": 2.75, "SUV": 2.15, "Minivan": 2.1, "Microbus": 1.75}
BODY = {
    "Sedan": [(0, .18), (0, .5), (.26, .54), (.36, .92), (.66, .92), (.79, .56), (1, .48), (1, .18)],
    "SUV": [(0, .16), (0, .9), (.72, .93), (.83, .62), (1, .56), (1, .16)],
    "Minivan": [(0, .15), (0, .9), (.05, .95), (.58, .95), (.86, .6), (1, .52), (1, .15)],
    "Microbus": [(0, .14), (0, .95), (.84, .95), (.97, .72), (1, .5), (1, .14)],
    "Bus": [(0, .12), (0, .96), (.97, .96), (1, .88), (1, .12)],
    "Truck": [(.72, .16), (.72, .86), (.88, .86), (1, .6), (1, .16)],  # the cab; cargo drawn apart
}
WINDOWS = {  # (u0, u1, v0, v1, count): a row of side windows
    "Sedan": (.4, .74, .6, .84, 2), "SUV": (.05, .78, .64, .86, 3), "Minivan": (.07, .8, .62, .88, 3),
    "Microbus": (.04, .82, .6, .88, 4), "Bus": (.03, .88, .56, .88, 7), "Truck": (.75, .9, .56, .78, 1),
}
WHEELS = {"Sedan": (.19, (.18, .82)), "SUV": (.2, (.18, .8)), "Minivan": (.18, (.17, .82)),
          "Microbus": (.16, (.17, .82)), "Bus": (.14, (.14, .8)), "Truck": (.15, (.1, .27, .86))}
BADGE_AT = {"Sedan": (.5, .34), "SUV": (.45, .4), "Minivan": (.45, .38), "Microbus": (.45, .37),
            "Bus": (.48, .33), "Truck": (.36, .56)}
WINDOW_RGB = (45, 58, 78)


def _badge(img: np.ndarray, brand: str, cx: int, cy: int, size: int) -> None:
    plate, emblem, fg, bg = BADGES[brand]
    r = size // 2
    edge = (20, 20, 20) if sum(bg) > 200 else (235, 235, 235)
    if plate == "circle":
        cv2.circle(img, (cx, cy), r + 1, edge, -1, cv2.LINE_AA)
        cv2.circle(img, (cx, cy), r, bg, -1, cv2.LINE_AA)
    elif plate == "oval":
        cv2.ellipse(img, (cx, cy), (r + 4, r - 1), 0, 0, 360, edge, -1, cv2.LINE_AA)
        cv2.ellipse(img, (cx, cy), (r + 3, r - 2), 0, 0, 360, bg, -1, cv2.LINE_AA)
    else:  # square or octagon plate
        cv2.rectangle(img, (cx - r - 1, cy - r - 1), (cx + r + 1, cy + r + 1), edge, -1)
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), bg, -1)
    k = max(2, size // 6)
    if emblem == "rings":
        for dx in (-k - 1, k + 1):
            cv2.circle(img, (cx + dx, cy), k + 1, fg, max(1, k // 2), cv2.LINE_AA)
    elif emblem == "quarters":
        cv2.ellipse(img, (cx, cy), (r - 2, r - 2), 0, 0, 90, fg, -1)
        cv2.ellipse(img, (cx, cy), (r - 2, r - 2), 0, 180, 270, fg, -1)
    elif emblem == "triangle":
        pts = np.array([(cx, cy - r + 2), (cx - r + 2, cy + r - 3), (cx + r - 2, cy + r - 3)], np.int32)
        cv2.fillPoly(img, [pts], fg, cv2.LINE_AA)
    elif emblem == "chevron":
        pts = np.array([(cx - r + 2, cy - k), (cx, cy + k), (cx + r - 2, cy - k)], np.int32)
        cv2.polylines(img, [pts], False, fg, max(2, k), cv2.LINE_AA)
    elif emblem == "cross":
        cv2.rectangle(img, (cx - k // 2 - 1, cy - r + 2), (cx + k // 2 + 1, cy + r - 2), fg, -1)
        cv2.rectangle(img, (cx - r + 2, cy - k // 2 - 1), (cx + r - 2, cy + k // 2 + 1), fg, -1)
    elif emblem == "star":
        ang = np.deg2rad(np.arange(10) * 36 - 90)
        rad = np.where(np.arange(10) % 2 == 0, r - 1, (r - 1) * 0.45)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).round().astype(np.int32)
        cv2.fillPoly(img, [pts], fg, cv2.LINE_AA)
    elif emblem == "H":
        cv2.rectangle(img, (cx - r + 2, cy - r + 2), (cx - r + 2 + k, cy + r - 2), fg, -1)
        cv2.rectangle(img, (cx + r - 2 - k, cy - r + 2), (cx + r - 2, cy + r - 2), fg, -1)
        cv2.rectangle(img, (cx - r + 2, cy - 1), (cx + r - 2, cy + 1), fg, -1)
    elif emblem == "bars":
        for dx in (-r, 0, r):
            cv2.rectangle(img, (cx + dx - 1, cy - r + 3), (cx + dx + 1, cy + r - 3), fg, -1)
    elif emblem == "octagon":
        ang = np.deg2rad(np.arange(8) * 45 + 22.5)
        pts = np.stack([cx + (r - 2) * np.cos(ang), cy + (r - 2) * np.sin(ang)], 1).round().astype(np.int32)
        cv2.polylines(img, [pts], True, fg, max(2, k), cv2.LINE_AA)
    elif emblem == "arrow":
        cv2.circle(img, (cx, cy), r - 3, fg, max(2, k // 2 + 1), cv2.LINE_AA)
        cv2.line(img, (cx - r + 1, cy + r - 1), (cx + r - 1, cy - r + 1), fg, max(2, k // 2 + 1), cv2.LINE_AA)
    elif emblem == "diamond":
        pts = np.array([(cx, cy - r + 1), (cx + r - 1, cy), (cx, cy + r - 1), (cx - r + 1, cy)], np.int32)
        cv2.fillPoly(img, [pts], fg, cv2.LINE_AA)
    else:  # square
        cv2.rectangle(img, (cx - r // 2, cy - r // 2), (cx + r // 2, cy + r // 2), fg, -1)


def draw_car(colour: str, brand: str, kind: str, domain: str, rng: np.random.Generator) -> np.ndarray:
    """A wide side view: body in `colour`, silhouette by `kind`, badge of `brand`; RGB uint8."""
    hv = int(rng.integers(46, 61))
    length = int(round(hv * ASPECT[kind] * rng.uniform(0.94, 1.06)))
    ml, mr, mt, mb = (int(v) for v in rng.integers(3, 11, 2).tolist() + rng.integers(4, 11, 2).tolist())
    h, w = hv + mt + mb, length + ml + mr
    img = background(h, w, domain, rng)
    x0, gy = ml, mt + hv
    flip = bool(rng.random() < 0.5)

    def P(u: float, v: float) -> tuple[int, int]:
        u = 1 - u if flip else u
        return int(round(x0 + u * length)), int(round(gy - v * hv))

    def poly(points, color) -> None:
        pts = np.array([P(u, v) for u, v in points], np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
        cv2.polylines(img, [pts], True, contrast_outline(color), 1, cv2.LINE_AA)

    body = jitter(CAR_RGB[colour], rng)
    shadow = shade(img[gy - 1, w // 2], 0.6)
    cv2.ellipse(img, P(0.5, 0.02), (length // 2, max(2, hv // 14)), 0, 0, 360, shadow, -1)
    if kind == "Truck":
        poly([(0, .14), (1, .14), (1, .22), (0, .22)], (30, 30, 30))  # chassis
        poly([(0, .2), (0, .95), (.69, .95), (.69, .2)], body)  # cargo box
        for u in np.arange(0.06, 0.66, 0.09):
            cv2.line(img, P(u, .24), P(u, .91), shade(body, 0.78), 1)
    poly(BODY[kind], body)
    u0, u1, v0, v1, n = WINDOWS[kind]
    step = (u1 - u0) / n
    for i in range(n):
        a, b = u0 + i * step + step * 0.08, u0 + (i + 1) * step - step * 0.08
        poly([(a, v0), (a, v1), (b, v1), (b, v0)], jitter(WINDOW_RGB, rng, 6))
    if kind == "Bus":
        poly([(.9, .16), (.9, .82), (.96, .82), (.96, .16)], jitter(WINDOW_RGB, rng, 6))  # door
    if kind == "SUV":
        cv2.line(img, P(.08, .97), P(.66, .97), (35, 35, 35), 2)  # roof rails
    cv2.rectangle(img, P(.975, .42), P(1.0, .34), (255, 245, 190), -1)  # headlight
    cv2.rectangle(img, P(0.0, .46), P(.02, .38), (220, 30, 30), -1)  # taillight
    rel, us = WHEELS[kind]
    wr = max(5, int(round(rel * hv)))
    for u in us:
        c = P(u, 0)
        c = (c[0], gy - wr)
        cv2.circle(img, c, wr, (22, 22, 22), -1, cv2.LINE_AA)
        cv2.circle(img, c, max(2, wr // 2), (150, 150, 155), -1, cv2.LINE_AA)
    bu, bv = BADGE_AT[kind]
    size = int(np.clip(round((0.4 if kind in ("Bus", "Truck") else 0.32) * hv), 14, 24))
    _badge(img, brand, *P(bu, bv), size)
    return apply_domain(img, domain, rng)
