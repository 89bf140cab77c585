"""Text-to-image retrieval: encode the gallery once (cached), encode the queries, chunked top-k.

Building blocks (`encode_images`, `encode_gallery`, `encode_texts`, `topk`, `classify_gallery`) and
one call for notebooks, `retrieve`. Embeddings are L2-normalised float32 on the CPU, so scores are
cosines and a cache hit ranks exactly as a miss. Top-k is computed on query chunks: the full
17,611 × 17,611 score matrix (1.2 GB) never exists. Ties are broken by gallery index (gallery sorted
by file name), so the same embeddings always give the same ranking.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lib import embedding_cache, prompts
from lib.embedding_cache import DEFAULT_CACHE_DIR
from lib.images import ImageError, as_preprocess_cfg, eval_split, read_image

PAD_POLICY = "pad_to_square(fill=preprocess.fill_color), then open_clip eval transform"
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass
class RetrievalResult:
    """What `retrieve` found; row q of every per-query field belongs to query q (input order)."""

    image_names: list[list[str]]  # the k best gallery names per query, best first
    scores: np.ndarray  # (queries, k) float32 cosine similarities (-inf: masked by category)
    indices: np.ndarray  # (queries, k) int64 rows of gallery_names
    gallery_names: list[str]  # sorted by file name
    encoded_texts: list[str]  # the query texts after the policy, as the model saw them
    gallery_emb: torch.Tensor  # (gallery, d) float32, L2-normalised
    query_emb: torch.Tensor  # (queries, d) float32, L2-normalised
    cache_hit: bool  # True when the gallery embeddings came from the cache
    gallery_kinds: list[str] | None = None  # category-aware only: 'car' | 'person' per gallery image
    gallery_margin: np.ndarray | None = None  # cos(car centroid) - cos(person centroid) per image


class _Bad:
    """A gallery image that failed in a DataLoader worker, carried back so that the main process
    raises ImageError (a worker's exception would come back as a RuntimeError holding a traceback)."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason


class GalleryDataset(Dataset):
    """Image paths -> padded, resized uint8 tensors (read_image + the eval transform up to ToTensor),
    in the given order; `split.normalise` finishes a batch."""

    def __init__(self, paths: Sequence[str | os.PathLike], preprocess_cfg: Any):
        self.paths = [str(p) for p in paths]
        self.split = eval_split(preprocess_cfg)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor | _Bad:
        try:
            return self.split.to_uint8(read_image(self.paths[i]))
        except ImageError as e:
            return _Bad(self.paths[i], e.reason)
        except Exception as e:  # noqa: BLE001 - any failure must name the image
            return _Bad(self.paths[i], f"could not be transformed ({type(e).__name__}: {e})")


def _collate(items: list) -> torch.Tensor | list[_Bad]:
    bad = [item for item in items if isinstance(item, _Bad)]
    return bad if bad else torch.stack(items)


def sort_gallery(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Gallery paths sorted by file name (the submission's identifiers); duplicate names are refused."""
    paths = sorted((Path(p) for p in paths), key=lambda p: p.name)
    dupes = sorted({a.name for a, b in zip(paths, paths[1:]) if a.name == b.name})
    if dupes:
        raise ValueError(f"{len(dupes)} gallery image name(s) occur twice, e.g. {dupes[0]!r}: "
                         "names must be unique")
    return paths


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def compute_dtype(precision: str, device: torch.device) -> str:
    """'fp32' | 'bf16' | 'fp16': what `precision` means on `device` (auto: bf16 on GPU, fp32 on CPU)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", *AUTOCAST):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    return precision


@contextlib.contextmanager
def _inference(model: torch.nn.Module, precision: str):
    """eval mode (no dropout), inference_mode, autocast when asked; the model's mode is restored."""
    device = model_device(model)
    dtype = AUTOCAST.get(compute_dtype(precision, device))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            yield device
    finally:
        model.train(was_training)


def loader_workers(requested: int, device: torch.device) -> int:
    """DataLoader workers worth starting. On a GPU, all asked for (they keep it fed). On the CPU the
    model's intra-op threads already hold the cores, and workers beside them only steal time (make
    bench, 2 cores: 2 workers 10-20% slower than none), so only cores the threads leave free."""
    if device.type != "cpu":
        return requested
    return max(0, min(requested, (os.cpu_count() or 1) - torch.get_num_threads()))


def encode_images(model: torch.nn.Module, paths: Sequence[str | os.PathLike], preprocess_cfg: Any, *,
                  batch_size: int = 256, workers: int = 0, precision: str = "auto",
                  progress: bool = True) -> torch.Tensor:
    """(len(paths), d) float32 CPU, L2-normalised, in the order of `paths`. A bad image raises ImageError."""
    dataset = GalleryDataset(paths, preprocess_cfg)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        num_workers=loader_workers(workers, model_device(model)), collate_fn=_collate,
                        pin_memory=model_device(model).type == "cuda")
    out = []
    with _inference(model, precision) as device, tqdm(total=len(paths), desc="encoding images",
                                                       unit="img", disable=not progress) as bar:
        for batch in loader:
            if isinstance(batch, list):
                raise ImageError(batch[0].path, batch[0].reason)
            feats = model.encode_image(dataset.split.normalise(batch.to(device, non_blocking=True)))
            out.append(F.normalize(feats.float(), dim=-1).cpu())
            bar.update(len(batch))
    return torch.cat(out) if out else torch.empty(0, 0)


def encode_gallery(model: torch.nn.Module, paths: Sequence[str | os.PathLike], preprocess_cfg: Any, *,
                   model_id: str | None = None, cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
                   batch_size: int = 256, workers: int = 0, precision: str = "auto",
                   progress: bool = True) -> tuple[list[str], torch.Tensor, bool]:
    """(names sorted, embeddings in that order, cache_hit). Encodes only on a cache miss.

    `model_id` identifies the weights and must change whenever they do: a checkpoint's sha256
    (lib.model.sha256_file or its `.sha256` sidecar); None: the state dict is hashed (embedding_cache).
    `cache_dir=None` encodes every time and writes nothing.
    """
    paths = sort_gallery(paths)
    names = [p.name for p in paths]
    if cache_dir is None:
        return names, encode_images(model, paths, preprocess_cfg, batch_size=batch_size, workers=workers,
                                    precision=precision, progress=progress), False
    pp = dataclasses.asdict(as_preprocess_cfg(preprocess_cfg))
    dtype = compute_dtype(precision, model_device(model))
    key, description = embedding_cache.cache_key(
        model_id or embedding_cache.model_fingerprint(model), paths, {**pp, "pad": PAD_POLICY}, dtype)
    cached = embedding_cache.load(cache_dir, key, names)
    if cached is not None:
        return names, torch.from_numpy(cached), True
    emb = encode_images(model, paths, preprocess_cfg, batch_size=batch_size, workers=workers,
                        precision=precision, progress=progress)
    embedding_cache.save(cache_dir, key, emb.numpy(), description)
    return names, emb, False


def encode_texts(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 256,
                 precision: str = "auto", progress: bool = True) -> torch.Tensor:
    """(len(texts), d) float32 CPU, L2-normalised, with the model's open_clip tokenizer."""
    texts, out = list(texts), []
    with _inference(model, precision) as device:
        for start in tqdm(range(0, len(texts), batch_size), desc="encoding texts", unit="batch",
                          disable=not progress):
            tokens = tokenizer(texts[start:start + batch_size]).to(device)
            out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def _resolve_boundary_ties(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of rows by (-score, index): all scores above the k-th value, then the equal ones
    with the smallest indices. O(n) per row; only used on rows whose tie straddles rank k."""
    kth = scores.topk(k, dim=1).values[:, -1:]
    above, equal = scores > kth, scores == kth
    need = k - above.sum(1, keepdim=True)
    chosen = above | (equal & (equal.cumsum(1, dtype=torch.int32) <= need))
    idx = chosen.nonzero()[:, 1].view(len(scores), k)
    return scores.gather(1, idx), idx


def _topk_rows(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row ordered by (-score, index). torch.topk picks among equal scores arbitrarily,
    so rows where a tie crosses rank k are redone exactly, and the k winners are re-sorted stably."""
    vals, idx = scores.topk(k, dim=1)
    kth = vals[:, -1:]
    crossing = (scores == kth).sum(1) > (vals == kth).sum(1)
    if crossing.any():
        vals[crossing], idx[crossing] = _resolve_boundary_ties(scores[crossing], k)
    by_index = idx.argsort(dim=1)
    idx, vals = idx.gather(1, by_index), vals.gather(1, by_index)
    order = vals.sort(dim=1, descending=True, stable=True).indices
    return vals.gather(1, order), idx.gather(1, order)


def topk(query_emb: torch.Tensor, gallery_emb: torch.Tensor, k: int = 10, chunk: int = 1024, *,
         query_groups: torch.Tensor | None = None,
         gallery_groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices), each (queries, k): the k best gallery rows per query by float32 dot product,
    best first, ties by smaller gallery index. Computed `chunk` queries at a time.

    With groups (one int per query / per gallery image), a query only ranks images of its own group:
    the others score -inf (they come last, by index, only when a group has fewer than k images).
    """
    n = len(gallery_emb)
    if not 0 < k <= n:
        raise ValueError(f"top-k needs 0 < k <= gallery size, got k={k} for {n} gallery images")
    if (query_groups is None) != (gallery_groups is None):
        raise ValueError("pass both query_groups and gallery_groups, or neither")
    gallery_t = gallery_emb.float().T.contiguous()
    all_scores, all_idx = [], []
    for start in range(0, len(query_emb), chunk):
        scores = query_emb[start:start + chunk].float() @ gallery_t
        if torch.isnan(scores).any():
            raise ValueError(f"NaN similarity in queries {start}..{start + len(scores) - 1}: "
                             "check the embeddings")
        if query_groups is not None:
            other = query_groups[start:start + chunk, None] != gallery_groups[None, :]
            scores.masked_fill_(other, float("-inf"))
        vals, idx = _topk_rows(scores, k)
        all_scores.append(vals)
        all_idx.append(idx)
    if not all_scores:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(all_scores), torch.cat(all_idx)


def classify_gallery(gallery_emb: torch.Tensor, query_emb: torch.Tensor,
                     query_kinds: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """'car' or 'person' per gallery image, by the nearer centroid of the car / person QUERY embeddings.

    Why the queries and not zero-shot prompts ("a photo of a car"): the fine-tuned model has only
    ever seen captions in the queries' style, and the demo's tiny foundation model may never have seen
    the prompt's words. Returns (kinds, margin = cos(car centroid) - cos(person centroid)); a margin
    of exactly 0 counts as car. With queries of one kind only, every image gets that kind.
    """
    kinds = np.asarray(list(query_kinds))
    present = [kind for kind in prompts.KINDS if (kinds == kind).any()]
    if len(present) < 2:
        return [present[0] if present else "car"] * len(gallery_emb), np.zeros(len(gallery_emb), np.float32)
    centroid = {kind: F.normalize(query_emb[torch.from_numpy(kinds == kind)].float().mean(0), dim=0)
                for kind in prompts.KINDS}
    margin = (gallery_emb.float() @ (centroid["car"] - centroid["person"])).numpy()
    return ["car" if m >= 0 else "person" for m in margin], margin


def options(cfg: Any) -> dict[str, Any]:
    """The `retrieve` keyword arguments a run's Config sets: `retrieve(..., **options(cfg))`."""
    return {"policy": cfg.prompt_policy, "k": cfg.topk, "batch_size": cfg.eval_batch_size,
            "workers": cfg.workers, "precision": cfg.precision, "category_aware": cfg.category_aware}


def retrieve(model: torch.nn.Module, tokenizer: Any, preprocess_cfg: Any, query_texts: Sequence[str],
             query_kinds: Sequence[str], gallery_paths: Sequence[str | os.PathLike], *,
             policy: str = "none", k: int = 10, model_id: str | None = None,
             cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR, batch_size: int = 256,
             workers: int = 0, precision: str = "auto", category_aware: bool = False,
             chunk: int = 1024, progress: bool = True) -> RetrievalResult:
    """The k best gallery images per query (queries in input order, gallery sorted by file name).

    `policy` rewrites car queries (lib.prompts); `category_aware`: car queries rank only images
    classified as cars, person queries only persons (classify_gallery). The model stays on its device.
    """
    encoded = prompts.apply_policy(query_texts, query_kinds, policy)
    names, gallery_emb, hit = encode_gallery(model, gallery_paths, preprocess_cfg, model_id=model_id,
                                             cache_dir=cache_dir, batch_size=batch_size, workers=workers,
                                             precision=precision, progress=progress)
    query_emb = encode_texts(model, tokenizer, encoded, batch_size=batch_size, precision=precision,
                             progress=progress)
    groups, gallery_kinds, margin = {}, None, None
    if category_aware:
        gallery_kinds, margin = classify_gallery(gallery_emb, query_emb, query_kinds)
        code = {kind: i for i, kind in enumerate(prompts.KINDS)}
        groups = {"query_groups": torch.tensor([code[q] for q in query_kinds]),
                  "gallery_groups": torch.tensor([code[g] for g in gallery_kinds])}
    scores, idx = topk(query_emb, gallery_emb, k=k, chunk=chunk, **groups)
    return RetrievalResult(
        image_names=[[names[j] for j in row] for row in idx.tolist()], scores=scores.numpy(),
        indices=idx.numpy(), gallery_names=names, encoded_texts=encoded, gallery_emb=gallery_emb,
        query_emb=query_emb, cache_hit=hit, gallery_kinds=gallery_kinds, gallery_margin=margin)
