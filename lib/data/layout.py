"""The dataset's folder layout as the organisers ship it (the demo generator writes the same)."""
from __future__ import annotations

import os
from pathlib import Path

SPLIT_FILES = {  # split -> (label or query file, image folder), relative to data_root
    "train": ("train/train_label.txt", "train/train_images"),
    "val": ("val/val_label.txt", "val/val_images"),
    "test": ("test/test_text.txt", "test/test_images"),
}
TEST_GT_FILE = "test/test_gt.txt"  # the test answers: only a dataset that knows them (the demo) has it
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


def image_names(folder: str | os.PathLike) -> list[str]:
    """The image files of a folder (by suffix), sorted by name: never the file system's order."""
    return sorted(p.name for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
