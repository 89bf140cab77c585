"""Images: read (RGB), check a split for missing or corrupt files, pad to a square.

Cars and people are cropped tight: CLIP's centre crop would cut off the ends of a wide car or a tall
person, so images are padded first. A bad image is named with its reason, never a crash."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from lib.errors import KitError
from lib.progress import bar as progress_bar

# A DataLoader worker silent this long has hung (dead mount, deadlock): raise, never wait for ever
WORKER_TIMEOUT_S = 900
JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
REPORT_COLUMNS = ["image", "path", "reason"]


class ImageError(KitError, ValueError):
    """An image is missing, empty, truncated or cannot be decoded; `path` and `reason` say which."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class TooManyBadImages(ImageError):
    """More images of a split are bad than `max_bad_image_fraction` tolerates; `report` lists them."""

    def __init__(self, message: str, report: pd.DataFrame, report_path: Path | None):
        self.report, self.report_path = report, report_path
        self.path, self.reason = str(report_path or ""), message
        ValueError.__init__(self, message)


@dataclass(frozen=True)
class BadImage:
    """What a dataset hands back instead of an image it could not read (picklable across workers)."""

    path: str
    reason: str


def pad_to_square(img: np.ndarray, fill: int = 0) -> np.ndarray:
    """Centre `img` (H×W or H×W×C uint8) on a square canvas of `fill`; an odd pixel goes bottom/right."""
    if not isinstance(img, np.ndarray):
        raise ValueError(f"pad_to_square needs a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"pad_to_square needs a uint8 image, got dtype {img.dtype}")
    if img.ndim not in (2, 3):
        raise ValueError(f"pad_to_square needs an H×W or H×W×C image, got shape {img.shape}")
    if not 0 <= int(fill) <= 255:
        raise ValueError(f"fill must be within 0..255, got {fill}")
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"pad_to_square got an empty image of shape {img.shape}")
    if h == w:
        return img.copy()
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    out = np.full((s, s) + img.shape[2:], int(fill), dtype=np.uint8)
    out[top:top + h, left:left + w] = img
    return out


def _jpeg_is_complete(data: bytes) -> bool:
    """Fast check: a whole JPEG ends with EOI. Files with bytes after EOI get a strict decode."""
    if data.rstrip(b"\x00 \r\n\t").endswith(JPEG_EOI):
        return True
    try:  # PIL refuses to decode a JPEG whose data runs out ("image file is truncated")
        with Image.open(io.BytesIO(data)) as im:
            im.load()
        return True
    except Image.DecompressionBombError:
        return True  # huge, not truncated
    except (OSError, SyntaxError, ValueError):
        return False


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an RGB uint8 H×W×3 array; ImageError names the path and the reason."""
    path = Path(path)
    try:
        data = path.read_bytes()  # read once: decode from memory, check the JPEG tail on the same bytes
    except FileNotFoundError:
        raise ImageError(path, "missing (no such file)") from None
    except IsADirectoryError:
        raise ImageError(path, "missing (a directory, not an image file)") from None
    except OSError as e:
        raise ImageError(path, f"unreadable ({e.strerror or e})") from None
    if not data:
        raise ImageError(path, "empty file (0 bytes)")
    is_jpeg = data.startswith(JPEG_SOI)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        bgr = None
    if bgr is None or bgr.size == 0:
        if is_jpeg and not _jpeg_is_complete(data):
            raise ImageError(path, "truncated JPEG (data ends before the end-of-image marker FFD9)")
        raise ImageError(path, f"not a decodable image (OpenCV could not decode its {len(data)} bytes)")
    if is_jpeg and not _jpeg_is_complete(data):  # OpenCV may return a partly grey decode
        raise ImageError(path, "truncated JPEG (data ends before the end-of-image marker FFD9)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _check(path: str | os.PathLike) -> str | None:
    try:
        read_image(path)
    except ImageError as e:
        return e.reason
    return None


def verify_images(paths: Sequence[str | os.PathLike], max_bad_fraction: float = 0.0,
                  report_path: str | os.PathLike | None = None, workers: int = 0,
                  progress: bool = True) -> pd.DataFrame:
    """The bad images as DataFrame[image, path, reason] (also to `report_path`), TooManyBadImages above
    `max_bad_fraction`. `workers`: decoding threads (OpenCV releases the GIL); 0: min(8, CPUs)."""
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise ValueError(f"max_bad_fraction must be within 0..1, got {max_bad_fraction}")
    paths = [Path(p) for p in paths]
    n_workers = workers if workers > 0 else min(8, os.cpu_count() or 1)
    bar = progress_bar(total=len(paths), desc="checking images", unit="img", show=progress)
    reasons: list[str | None] = []
    if n_workers == 1 or len(paths) < 64:
        for p in paths:
            reasons.append(_check(p))
            bar.update()
    else:
        with ThreadPoolExecutor(n_workers) as pool:
            for reason in pool.map(_check, paths):  # map keeps the input order
                reasons.append(reason)
                bar.update()
    bar.close()

    bad = [(p.name, str(p), r) for p, r in zip(paths, reasons) if r is not None]
    report = pd.DataFrame(bad, columns=REPORT_COLUMNS)
    fraction = len(bad) / len(paths) if paths else 0.0
    report.attrs.update(checked=len(paths), bad_fraction=fraction)
    if report_path is not None:
        report_path = Path(report_path)
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report.to_csv(report_path, index=False)
    if fraction > max_bad_fraction:
        shown = "\n".join(f"  {name}: {reason}" for name, _, reason in bad[:5])
        more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        where = f"Full list: {report_path}.\n" if report_path is not None else ""
        raise TooManyBadImages(
            f"{len(bad)} of {len(paths)} images ({fraction:.2%}) are missing or unreadable, more than "
            f"max_bad_image_fraction={max_bad_fraction:g} allows:\n{shown}{more}\n{where}"
            f"Restore or replace those files, or set max_bad_image_fraction=... (e.g. "
            f"{min(1.0, round(fraction + 0.005, 3)):g}) to leave them out and go on.",
            report, report_path,
        )
    return report
