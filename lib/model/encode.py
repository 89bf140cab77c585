"""Images and texts to L2-normalised float32 CPU embeddings (steps 2 and 4, the training evaluator)."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lib.data import images, transforms
from lib.data.images import WORKER_TIMEOUT_S, BadImage, ImageError, read_image
from lib.data.transforms import eval_two_stage
from lib.model.device import AUTOCAST_DTYPES, resolve_precision
from lib.progress import bar as progress_bar


class GalleryDataset(Dataset):
    """Image paths -> uint8 tensors (eval transform up to ToTensor) in order, or BadImage; `flip`: of
    each image's mirror; `pad` False: not padded to a square first."""

    def __init__(self, paths: Sequence[str | os.PathLike], preprocess_cfg: Any, flip: bool = False,
                 pad: bool = True):
        self.paths = [str(p) for p in paths]
        self.transform = eval_two_stage(preprocess_cfg, flip=flip, pad=pad)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | BadImage:
        try:
            return self.transform.to_uint8(read_image(self.paths[i]))
        except ImageError as e:
            return BadImage(self.paths[i], e.reason)
        except Exception as e:  # noqa: BLE001 - any failure must name the image
            return BadImage(self.paths[i], f"could not be transformed ({type(e).__name__}: {e})")


def _collate(items: list) -> torch.Tensor | list[BadImage]:
    bad = [item for item in items if isinstance(item, BadImage)]
    return bad if bad else torch.stack(items)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _inference(model: torch.nn.Module, precision: str):
    """eval mode (no dropout), inference_mode, autocast when asked; the model's mode is restored."""
    device = model_device(model)
    dtype = AUTOCAST_DTYPES.get(resolve_precision(precision, device))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            yield device
    finally:
        model.train(was_training)


def loader_workers(requested: int, device: torch.device) -> int:
    """All asked for on a GPU; on the CPU only cores torch's threads leave free (make bench, 2 cores:
    2 workers beside the threads 10-20% slower than none)."""
    if device.type != "cpu":
        return requested
    return max(0, min(requested, (os.cpu_count() or 1) - torch.get_num_threads()))


def encode_images(model: torch.nn.Module, paths: Sequence[str | os.PathLike], preprocess_cfg: Any, *,
                  batch_size: int = 256, workers: int = 0, precision: str = "auto",
                  progress: bool = True, flip: bool = False, pad: bool = True) -> torch.Tensor:
    """(len(paths), d), in order; a bad image raises ImageError. `flip`: of the mirrored images."""
    dataset = GalleryDataset(paths, preprocess_cfg, flip=flip, pad=pad)
    n_workers = loader_workers(workers, model_device(model))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=n_workers,
                        collate_fn=_collate, pin_memory=model_device(model).type == "cuda",
                        timeout=WORKER_TIMEOUT_S if n_workers else 0)
    out = []
    desc = "encoding mirrored images" if flip else "encoding images"
    with _inference(model, precision) as device, progress_bar(total=len(paths), desc=desc, unit="img",
                                                              show=progress) as bar:
        for batch in loader:
            if isinstance(batch, list):
                raise ImageError(batch[0].path, batch[0].reason)
            feats = model.encode_image(dataset.transform.normalise(batch.to(device, non_blocking=True)))
            out.append(F.normalize(feats.float(), dim=-1).cpu())
            bar.update(len(batch))
    return torch.cat(out) if out else torch.empty(0, 0)


def encode_texts(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 256,
                 precision: str = "auto", progress: bool = True) -> torch.Tensor:
    """(len(texts), d), with the model's open_clip tokenizer."""
    texts, out = list(texts), []
    with _inference(model, precision) as device, progress_bar(total=len(texts), desc="encoding texts",
                                                              unit="text", show=progress) as bar:
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(texts[start:start + batch_size]).to(device)
            out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
            bar.update(len(tokens))
    return torch.cat(out) if out else torch.empty(0, 0)


def truncated_texts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Indices of the texts longer than the text tower's context, which the tokenizer cuts silently."""
    texts = list(texts)
    context = getattr(tokenizer, "context_length", None)
    if context and hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):
        return [i for i, text in enumerate(texts) if len(tokenizer.encode(text)) + 2 > context]
    tokens = tokenizer(texts)  # other tokenizers: a row that fills its context may have been cut
    return [i for i, row in enumerate(tokens) if int(row[-1]) != 0]


@functools.cache
def preprocessing_fingerprint() -> str:
    """sha256 of the source between an image file and the image tower's tensor: part of the embedding
    cache's key, so that an edit of that code never reuses embeddings made by the old one."""
    parts = (images.read_image, images._jpeg_is_complete, images.pad_to_square, transforms.as_preprocess_cfg,
             transforms.PadThen, transforms.eval_transform, transforms.TwoStageTransform,
             transforms.eval_two_stage, GalleryDataset, _collate, _inference, encode_images)
    return hashlib.sha256("".join(inspect.getsource(part) for part in parts).encode()).hexdigest()
