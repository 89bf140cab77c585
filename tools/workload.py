"""What the speed figures are measured on and against, shared by make bench and the GPU proof.

Images at given sizes (JPEGs that compress like photos), captions of real lengths (the competition's
validation texts, tools/assets/real_captions.txt), the reference's gallery loop (PIL decode, PIL pad,
open_clip's preprocess one image at a time: the peer the kit's encoder races) and the training table
both trainers read.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image

REAL_CAPTIONS = Path(__file__).parent / "assets" / "real_captions.txt"  # the texts of the real val labels


def demo_size(i: int, rng: np.random.Generator) -> tuple[int, int]:
    """(width, height) of image i at the demo's sizes: 1 in 3 a wide 'car', else a tall 'person'."""
    return (128, 72) if i % 3 == 0 else (48, 128)


def make_images(folder: Path, n: int, seed: int = 0,
                size: Callable[[int, np.random.Generator], tuple[int, int]] = demo_size) -> list[Path]:
    """n JPEGs of `size`'s sizes (default: the demo's, 128×72 cars and 48×128 persons), each a
    gradient background, a filled shape and sensor noise (so that they compress like photos)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = size(i, rng)
        ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        base, top = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        img = (base + (top - base) * ramp).repeat(h, axis=0)
        x0, y0 = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
        cv2.rectangle(img, (x0, y0), (w - 1 - x0, h - 1 - y0), [int(c) for c in rng.integers(0, 256, 3)], -1)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"bench_{i:06d}.jpg"
        if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


def captions(n: int, source: Path = REAL_CAPTIONS) -> list[str]:
    """n captions of real lengths, deterministic: the competition's validation texts (cars and persons,
    27 tokens on average) in a seeded order. Their length matters: the text tower's cost follows it."""
    texts = [line for line in source.read_text(encoding="utf-8").splitlines() if line]
    pool = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))]
    return [pool[i % len(pool)] for i in range(n)]


def pil_pad_to_square(img: Image.Image, fill: int = 0) -> Image.Image:
    """The reference's padding with PIL: centre on a square canvas (offsets as pad_to_square's)."""
    w, h = img.size
    s = max(w, h)
    canvas = Image.new(img.mode, (s, s), (fill,) * len(img.getbands()))
    canvas.paste(img, ((s - w) // 2, (s - h) // 2))
    return canvas


def naive_encode(model: torch.nn.Module, paths: list[Path], preprocess: Callable, batch_size: int,
                 fill: int = 0) -> torch.Tensor:
    """The reference's gallery loop: PIL decode, pad, preprocess one by one, stack, encode, no workers
    (the batch goes to the model's device, the features come back to the CPU, as in the reference)."""
    out, device = [], next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([preprocess(pil_pad_to_square(Image.open(p).convert("RGB"), fill))
                                 for p in paths[start:start + batch_size]])
            feats = model.encode_image(batch.to(device)).cpu()
            out.append(feats / feats.norm(dim=-1, keepdim=True))
    return torch.cat(out)


def write_table(path: Path, image_paths: list[Path], captions: list[str], rows: int) -> Path:
    """rows pairs cycling through the images (the same CSV for both trainers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"filepath": [str(Path(image_paths[i % len(image_paths)]).resolve()) for i in range(rows)],
                  "title": [captions[i % len(captions)] for i in range(rows)]}).to_csv(path, index=False)
    return path
