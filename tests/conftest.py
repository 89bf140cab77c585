"""Shared fixtures: a micro CLIP and a small gallery; a smoke-profile pipeline run in a temporary
folder, its notebooks executed once."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_image(path, seed: int, shape=(20, 36)) -> None:
    """A small noise image (RGB of a seeded generator) written with OpenCV."""
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (*shape, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def clip():
    """(model, tokenizer, preprocess cfg) of a randomly initialised kit-micro-vit (seed 0)."""
    from lib.model.factory import create_model

    torch.manual_seed(0)
    return create_model("kit-micro-vit")


@pytest.fixture
def gallery(tmp_path):
    """Six small PNGs, wide ("cars") and tall ("persons"), returned in a deliberately unsorted order."""
    folder = tmp_path / "gallery"
    folder.mkdir()
    names = ["e.png", "a.png", "f.png", "c.png", "b.png", "d.png"]
    for i, name in enumerate(names):
        write_image(folder / name, i, (20, 36) if name in ("a.png", "b.png", "c.png") else (36, 20))
    return [folder / n for n in names]


@pytest.fixture(scope="session")
def smoke_workspace(tmp_path_factory) -> dict:
    """Where the smoke pipeline writes: its own data and runs folders, never the repo's."""
    root = tmp_path_factory.mktemp("smoke")
    overrides = {"data_root": str(root / "data"), "runs_root": str(root / "runs"),
                 "pretrained": str(root / "data" / "foundation" / "foundation.pt"),
                 "run_name": "smoke-run"}
    return {"root": root, "overrides": overrides, "executed": {}}


@pytest.fixture(scope="session")
def smoke_notebook(smoke_workspace):
    """Execute a pipeline notebook on the smoke profile (each at most once, in pipeline order), in
    one run whose params.yaml the pipeline wrote, as make reproduce does."""
    from lib import config, runs
    from lib.pipeline import notebooks, runner

    cfg = config.load("smoke", **smoke_workspace["overrides"])
    executed = smoke_workspace["executed"]

    def run(name: str) -> Path:
        if name not in executed:
            if "run_dir" not in smoke_workspace:
                smoke_workspace["run_dir"] = runs.create_run(cfg)
            run_dir = smoke_workspace["run_dir"]
            params = {"run_dir": str(run_dir)}
            for step in runner.PIPELINE[: runner.PIPELINE.index(name) + 1]:
                if step not in executed and (notebooks.NOTEBOOK_DIR / f"{step}.ipynb").exists():
                    executed[step] = notebooks.run_notebook(step, run_dir, params, timeout_s=600)
        return executed[name]

    return run
