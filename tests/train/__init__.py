"""Helpers of the training tests: kit-micro-vit (32 px) from random init on 16 generated images,
batch 4, so a run is a few CPU steps."""
import cv2
import numpy as np
import pandas as pd

from lib import config

N_IMAGES, BATCH = 16, 4  # 4 steps an epoch


def make_table(folder, n=N_IMAGES):
    """n small non-square images with captions naming their colour (so there is something to learn)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "white": (240, 240, 240)}
    rows = []
    for i in range(n):
        name, rgb = list(colours.items())[i % 4]
        img = np.clip(np.array(rgb) + rng.normal(0, 20, (24 + i % 3, 32, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i:02d}.jpg"
        assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        rows.append({"filepath": str(path), "title": f"a {name} car number {i}", "image": path.name})
    return pd.DataFrame(rows)


def tiny_cfg(tmp_path, **overrides):
    values = dict(model="kit-micro-vit", pretrained="", batch_size=BATCH, workers=0, warmup_steps=2,
                  schedule_epochs=3, stop_epoch=2, log_every=2, device="cpu", lr=1e-3, seed=0,
                  submit_epoch=0, runs_root=str(tmp_path / "runs"))
    return config.load("smoke", **{**values, **overrides})
