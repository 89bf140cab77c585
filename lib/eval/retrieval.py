"""Text-to-image retrieval: the gallery encoded once (cached: lib.eval.embedding_cache), the queries
after the run's query policy, top-k, then the re-ranker (lib.eval.rerank) on each query's top N.
Embeddings are L2-normalised float32 on the CPU, so scores are cosines and a cache hit ranks as a miss."""
from __future__ import annotations

import dataclasses
import os
import random
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lib.data.transforms import as_preprocess_cfg
from lib.eval import embedding_cache
from lib.eval.embedding_cache import DEFAULT_CACHE_DIR
from lib.eval.query_policy import KINDS, apply_policy
from lib.eval.rerank import Rerank, RerankError
from lib.eval.rerank import rerank as rerank_candidates
from lib.eval.rerank import settings as rerank_settings
from lib.eval.topk import topk
from lib.model.device import resolve_precision
from lib.model.encode import encode_images, encode_texts, model_device, preprocessing_fingerprint

PAD_POLICY = "pad_to_square(fill=preprocess.fill_color), then open_clip eval transform"


@dataclasses.dataclass
class RetrievalResult:
    """What `retrieve` found; row q of every per-query field belongs to query q (input order)."""

    image_names: list[list[str]]  # the k best gallery names per query, best first
    scores: np.ndarray  # (queries, k) float32 cosines (-inf: masked by category), or the re-ranker's
    indices: np.ndarray  # (queries, k) int64 rows of gallery_names
    gallery_names: list[str]  # sorted by file name
    encoded_texts: list[str]  # the query texts after the policy, as the model saw them
    gallery_emb: torch.Tensor  # (gallery, d) float32, L2-normalised
    query_emb: torch.Tensor  # (queries, d) float32, L2-normalised
    cache_hit: bool  # True when the gallery embeddings came from the cache
    gallery_kinds: list[str] | None = None  # category-aware only: 'car' | 'person' per gallery image
    gallery_flip_emb: torch.Tensor | None = None  # A3R with flip only: the mirrored gallery, as gallery_emb


def sort_gallery(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Gallery paths sorted by file name (the submission's identifiers); duplicate names are refused."""
    paths = sorted((Path(p) for p in paths), key=lambda p: p.name)
    dupes = sorted({a.name for a, b in zip(paths, paths[1:]) if a.name == b.name})
    if dupes:
        raise ValueError(f"{len(dupes)} gallery image name(s) occur twice, e.g. {dupes[0]!r}: "
                         "names must be unique")
    return paths


def encode_gallery(model: torch.nn.Module, paths: Sequence[str | os.PathLike], preprocess_cfg: Any, *,
                   model_id: str | None = None, cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR,
                   batch_size: int = 256, workers: int = 0, precision: str = "auto",
                   progress: bool = True, flip: bool = False) -> tuple[list[str], torch.Tensor, bool]:
    """(names sorted, embeddings in that order, cache_hit); encodes only on a cache miss. `model_id`
    must change with the weights: a checkpoint's sha256, else None (the state dict is hashed).
    `cache_dir`: a folder, DEFAULT_CACHE_DIR or None (no cache). `flip`: A3R's mirrored gallery."""
    paths = sort_gallery(paths)
    names = [p.name for p in paths]
    cache_dir = embedding_cache.resolve_dir(cache_dir)
    if cache_dir is None:
        return names, encode_images(model, paths, preprocess_cfg, batch_size=batch_size, workers=workers,
                                    precision=precision, progress=progress, flip=flip), False
    key, description = embedding_cache.cache_key(
        model_id or embedding_cache.model_fingerprint(model), paths,
        {**dataclasses.asdict(as_preprocess_cfg(preprocess_cfg)), "pad": PAD_POLICY, "flip": bool(flip)},
        resolve_precision(precision, model_device(model)), code=preprocessing_fingerprint())
    cached = embedding_cache.load(cache_dir, key, names, model_id=description["model_id"])
    if cached is not None and _spot_check(model, paths, cached, preprocess_cfg, precision, flip,
                                          cache_dir / f"{key}.npy"):
        return names, torch.from_numpy(cached), True
    emb = encode_images(model, paths, preprocess_cfg, batch_size=batch_size, workers=workers,
                        precision=precision, progress=progress, flip=flip)
    embedding_cache.save(cache_dir, key, emb.numpy(), description)
    return names, emb, False


SPOT_CHECK_ROWS = 8  # rows of a cache entry encoded again at every hit, chosen at random
SPOT_CHECK_COSINE = 0.999  # the same model, images and precision give the same row (to rounding)


def _spot_check(model: torch.nn.Module, paths: list[Path], cached: np.ndarray, preprocess_cfg: Any,
                precision: str, flip: bool, entry: Path) -> bool:
    """Encode a few random rows again: an entry whose rows are not these images' embeddings under this
    model (reordered, another model's, a forged sidecar) is refused. Fresh rows each time: unguessable."""
    rows = sorted(random.SystemRandom().sample(range(len(paths)), min(SPOT_CHECK_ROWS, len(paths))))
    fresh = encode_images(model, [paths[i] for i in rows], preprocess_cfg, batch_size=len(rows),
                          precision=precision, progress=False, flip=flip).numpy()
    cosine = (fresh * cached[rows]).sum(axis=1)
    if (cosine >= SPOT_CHECK_COSINE).all():
        return True
    bad = rows[int(np.argmin(cosine))]
    warnings.warn(f"ignoring embedding cache {entry}: its row for {paths[bad].name} is not that image's "
                  f"embedding under the model in use (cosine {cosine.min():.3f}); encoding the gallery again",
                  stacklevel=3)
    return False


def classify_gallery(gallery_emb: torch.Tensor, query_emb: torch.Tensor,
                     query_kinds: Sequence[str]) -> list[str]:
    """'car' or 'person' per gallery image by the nearer centroid of the car / person QUERY embeddings
    (ties: car): the fine-tuned model knows the queries' style of caption, not zero-shot prompts'."""
    kinds = np.asarray(list(query_kinds))
    present = [kind for kind in KINDS if (kinds == kind).any()]
    if len(present) < 2:
        return [present[0] if present else "car"] * len(gallery_emb)
    centroid = {kind: F.normalize(query_emb[torch.from_numpy(kinds == kind)].float().mean(0), dim=0)
                for kind in KINDS}
    margin = (gallery_emb.float() @ (centroid["car"] - centroid["person"])).numpy()
    return ["car" if m >= 0 else "person" for m in margin]


def options(cfg: Any) -> dict[str, Any]:
    """The `retrieve` keyword arguments a run's Config sets: `retrieve(..., **options(cfg))`."""
    return {"policy": cfg.query_policy, "k": cfg.topk, "batch_size": cfg.eval_batch_size,
            "workers": cfg.workers, "precision": cfg.precision, "category_aware": cfg.category_aware,
            "rerank": rerank_settings(cfg)}


def retrieve(model: torch.nn.Module, tokenizer: Any, preprocess_cfg: Any, query_texts: Sequence[str],
             query_kinds: Sequence[str], gallery_paths: Sequence[str | os.PathLike], *,
             policy: str = "none", k: int = 10, model_id: str | None = None,
             cache_dir: str | os.PathLike | None = DEFAULT_CACHE_DIR, batch_size: int = 256,
             workers: int = 0, precision: str = "auto", category_aware: bool = False,
             rerank: Rerank | None = None, chunk: int = 1024, progress: bool = True) -> RetrievalResult:
    """The k best gallery images per query (gallery sorted by file name). `category_aware`: queries
    rank only the images classify_gallery gives their kind; `rerank` None or "none": the first stage."""
    encoded = apply_policy(query_texts, query_kinds, policy)
    gallery = partial(encode_gallery, model, gallery_paths, preprocess_cfg, model_id=model_id,
                      cache_dir=cache_dir, batch_size=batch_size, workers=workers, precision=precision,
                      progress=progress)
    names, gallery_emb, hit = gallery()
    query_emb = encode_texts(model, tokenizer, encoded, batch_size=batch_size, precision=precision,
                             progress=progress)
    reranking = rerank is not None and rerank.active
    depth = min(max(k, rerank.max_depth), len(names)) if reranking else k
    scores, idx, gallery_kinds = first_stage(query_emb, gallery_emb, query_kinds, depth,
                                             category_aware=category_aware, chunk=chunk)
    flip_emb = gallery(flip=True)[1] if reranking and rerank.needs_flip else None
    if reranking:
        scores, idx = second_stage(query_emb, gallery_emb, scores, idx, query_kinds, rerank, flip_emb, k)
    return RetrievalResult(
        image_names=[[names[j] for j in row] for row in idx.tolist()], scores=scores.numpy(),
        indices=idx.numpy(), gallery_names=names, encoded_texts=encoded, gallery_emb=gallery_emb,
        query_emb=query_emb, cache_hit=hit, gallery_kinds=gallery_kinds, gallery_flip_emb=flip_emb)


def first_stage(query_emb: torch.Tensor, gallery_emb: torch.Tensor, query_kinds: Sequence[str], depth: int, *,
                category_aware: bool = False, chunk: int = 1024
                ) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    """(scores, indices, gallery_kinds or None): each query's `depth` best gallery rows."""
    groups, gallery_kinds = {}, None
    if category_aware:
        gallery_kinds = classify_gallery(gallery_emb, query_emb, query_kinds)
        groups = {"query_groups": torch.tensor([KINDS.index(q) for q in query_kinds]),
                  "gallery_groups": torch.tensor([KINDS.index(g) for g in gallery_kinds])}
    return *topk(query_emb, gallery_emb, k=depth, chunk=chunk, **groups), gallery_kinds


def second_stage(query_emb: torch.Tensor, gallery_emb: torch.Tensor, scores: torch.Tensor, idx: torch.Tensor,
                 query_kinds: Sequence[str], rerank: Rerank, gallery_flip: torch.Tensor | None,
                 k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The re-ranked k best of the first stage's candidates (scores, idx from `first_stage`)."""
    depths = torch.tensor([rerank.depth(kind) for kind in query_kinds])
    masked = torch.isinf(scores) & (torch.arange(scores.shape[1])[None, :] < depths[:, None])
    if masked.any():
        raise RerankError("re-ranking needs each query's first N candidates, but category-aware retrieval "
                          "left a query fewer images of its kind: lower rerank_depth_car / "
                          "rerank_depth_person or turn category_aware off")
    return rerank_candidates(query_emb, gallery_emb, idx, rerank, kinds=query_kinds,
                             gallery_flip=gallery_flip, k=k)
