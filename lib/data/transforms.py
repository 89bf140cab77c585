"""What the model sees of an image: pad to a square, then open_clip's own transform for the model.

`TwoStageTransform` cuts it at ToTensor: workers send uint8 tensors and a batch is normalised at once
(a quarter of a training sample's loading time), bit for bit the per-image transform."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from open_clip import get_model_preprocess_cfg
from open_clip.transform import (
    AugmentationCfg,
    MaybeToTensor,
    PreprocessCfg,
    image_transform_v2,
    merge_preprocess_dict,
)
from PIL import Image
from torchvision.transforms import Normalize

from lib.data.images import pad_to_square


def as_preprocess_cfg(cfg: Any):
    """open_clip PreprocessCfg from a PreprocessCfg, a dict (`model.visual.preprocess_cfg`) or a model."""
    if isinstance(cfg, PreprocessCfg):
        return cfg
    if hasattr(cfg, "visual"):  # a CLIP model
        cfg = get_model_preprocess_cfg(cfg)
    if not isinstance(cfg, dict):
        raise ValueError(f"expected an open_clip PreprocessCfg, dict or model, got {type(cfg).__name__}")
    cfg = dict(cfg)
    if "size" not in cfg and "image_size" in cfg:
        cfg["size"] = cfg["image_size"]
    return PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), cfg))


class PadThen:
    """RGB uint8 ndarray → pad_to_square → open_clip transform; a class, so that workers can pickle it."""

    def __init__(self, inner: Callable, fill: int = 0):
        self.inner, self.fill = inner, int(fill)

    def __call__(self, img: np.ndarray | Image.Image):
        if isinstance(img, Image.Image):
            img = np.asarray(img.convert("RGB"))
        if img.ndim == 3 and img.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H×W×3), got shape {img.shape}")
        return self.inner(Image.fromarray(pad_to_square(img, self.fill)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pad_to_square(fill={self.fill}), {self.inner!r})"


def eval_transform(preprocess_cfg: Any) -> PadThen:
    """Pad to square, then open_clip's eval transform (resize, centre crop, normalise) for the cfg."""
    pp = as_preprocess_cfg(preprocess_cfg)
    return PadThen(image_transform_v2(pp, is_train=False), fill=pp.fill_color)


def train_transform(preprocess_cfg: Any, scale: tuple[float, float] = (0.9, 1.0),
                    photometric_jitter: Sequence[float] = (),
                    photometric_jitter_prob: float = 0.0) -> PadThen:
    """Pad to square, then open_clip's train transform with its colour jitter, which draws from Python's
    `random` and torch: a dataset seeds both per sample (lib.train.data.PairDataset)."""
    pp = as_preprocess_cfg(preprocess_cfg)
    jitter: dict[str, Any] = {}
    if photometric_jitter_prob > 0:
        if len(photometric_jitter) != 4:
            raise ValueError("photometric_jitter needs (brightness, contrast, saturation, hue), "
                             f"got {tuple(photometric_jitter)}")
        jitter = {"color_jitter": tuple(float(v) for v in photometric_jitter),
                  "color_jitter_prob": float(photometric_jitter_prob)}
    aug = AugmentationCfg(scale=tuple(float(s) for s in scale), **jitter)
    with warnings.catch_warnings():  # open_clip 3.3 uses the jitter items, then calls them unused
        warnings.filterwarnings("ignore", message="Unused augmentation cfg items", category=UserWarning)
        inner = image_transform_v2(pp, is_train=True, aug_cfg=aug)
    return PadThen(inner, fill=pp.fill_color)


class TwoStageTransform:
    """A PadThen cut at ToTensor: `to_uint8` per image, `normalise` per batch. `flip`: mirror first (A3R's
    flip test-time augmentation); `pad` False: no padding (the reference's zero-shot augmentation)."""

    def __init__(self, padded: PadThen, flip: bool = False, pad: bool = True):
        steps = list(getattr(padded.inner, "transforms", []))
        cut = next((i for i, t in enumerate(steps) if isinstance(t, MaybeToTensor)), None)
        if cut is None or cut != len(steps) - 2 or not isinstance(steps[-1], Normalize):
            raise ValueError(f"unexpected open_clip transform, cannot cut it at ToTensor: {padded.inner!r}")
        self.fill, self.to_size, self.flip, self.pad = padded.fill, steps[:cut], bool(flip), bool(pad)
        self.mean = torch.tensor(steps[-1].mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(steps[-1].std, dtype=torch.float32).view(1, -1, 1, 1)

    def to_uint8(self, img: np.ndarray) -> torch.Tensor:
        """RGB uint8 H×W×3 → resized uint8 C×H×W: what a worker sends."""
        if self.flip:
            img = np.ascontiguousarray(img[:, ::-1])
        pil = Image.fromarray(pad_to_square(img, self.fill) if self.pad else img)
        for step in self.to_size:
            pil = step(pil)
        return torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1).contiguous()

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 B×C×H×W → float B×C×H×W as to_tensor + Normalize give it."""
        mean, std = self.mean.to(batch.device), self.std.to(batch.device)
        return batch.to(torch.float32).div(255).sub_(mean).div_(std)


def eval_two_stage(preprocess_cfg: Any, flip: bool = False, pad: bool = True) -> TwoStageTransform:
    return TwoStageTransform(eval_transform(preprocess_cfg), flip=flip, pad=pad)


def train_two_stage(preprocess_cfg: Any, scale: tuple[float, float] = (0.9, 1.0),
                    photometric_jitter: Sequence[float] = (), photometric_jitter_prob: float = 0.0
                    ) -> TwoStageTransform:
    return TwoStageTransform(
        train_transform(preprocess_cfg, scale, photometric_jitter, photometric_jitter_prob))
