"""`make bench` section `rerank`: the kit's batched A3R re-ranking against a per-query port of the
reference notebook (reranking.ipynb), on the same embeddings; both must give the same rankings.

The port keeps the notebook's structure: per query, cosine matrices with torch.cosine_similarity and
torch.max over the mirror, the adapted query by an SVD as sklearn's PCA computes it, `knn` sorting
the whole similarity matrix with numpy on every call, `is_k_reciprocal` tests, a loop over the
candidates. Its loops are fixed to do what the description says (lib.eval.rerank's docstring):
the reciprocity test uses the query (the notebook used candidate 0), each candidate's embedded
feature is built from its own neighbours (the notebook used the last candidate's), the quantified
counts are capped at 2k - 1 (the notebook divided by zero at r = 2k), the component's sign is the
text's (the notebook negated sklearn's by hand). Encoding is outside both sides: they start from the
cached embeddings.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lib.eval.rerank import Rerank, rerank
from lib.eval.topk import topk

# --- the port: one query at a time -----------------------------------------------------------------


def knn(idx: int, sm: np.ndarray, k: int) -> list[int]:
    """The notebook's knn: the k largest of row idx, after sorting the whole matrix (stable: ties to the
    smaller column, the kit's rule)."""
    return np.argsort(-sm, axis=1, kind="stable")[idx, :k].tolist()


def is_k_reciprocal(i: int, j: int, sm_img: np.ndarray, k: int) -> bool:
    return j in knn(i, sm_img, k) and i in knn(j, sm_img, k)


def query_in_neighbourhood(p: int, sm_img: np.ndarray, sm_qry: np.ndarray, k: int) -> bool:
    """Is the query among p's k nearest when it joins the candidates (placed first: it wins ties)?"""
    row = np.concatenate([[sm_qry[0, p]], sm_img[p]])[None, :]
    return 0 in knn(0, row, k)


def is_k_reciprocal_with_query(p: int, sm_img: np.ndarray, sm_qry: np.ndarray, k: int) -> bool:
    return p in knn(0, sm_qry, k) and query_in_neighbourhood(p, sm_img, sm_qry, k)


def pca_query(text_sims: torch.Tensor, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The notebook's DecomcamAggregator: PCA(1) fitted on (alpha * features)^T, i.e. the d coordinates
    as samples, computed as sklearn does (centre, SVD, U S); the sign is the text's."""
    alpha = text_sims.numpy()
    span = alpha.max() - alpha.min()
    alpha = (alpha - alpha.min()) / span if span > 0 else np.ones_like(alpha)
    data = (alpha[:, None] * features.numpy()).T  # (d, m)
    data = data - data.mean(axis=0)
    u, s, _ = np.linalg.svd(data, full_matrices=False)
    component = torch.from_numpy(u[:, 0] * s[0])
    return component if float(component @ text) >= 0 else -component


def quantified_similarity(sm_img: np.ndarray, sm_qry: np.ndarray, k: int) -> np.ndarray:
    knn_qry = knn(0, sm_qry, k)
    common, reciprocal = [], []
    for idx in range(len(sm_img)):
        knn_img = knn(idx, sm_img, k)
        common.append(len(set(knn_qry) & set(knn_img)) + 2)
        reciprocal.append(len([p for p in knn_img if is_k_reciprocal_with_query(p, sm_img, sm_qry, k)])
                          + len([p for p in knn_qry if is_k_reciprocal(p, idx, sm_img, k)])
                          + 2 * is_k_reciprocal_with_query(idx, sm_img, sm_qry, k))
    c = np.minimum(np.array(common), 2 * k - 1)
    r = np.minimum(np.array(reciprocal), 2 * k - 1)
    return sm_qry[0] * (c / (2 * k - c)) * (r / (2 * k - r))


def embedded_similarity(sm_img: np.ndarray, sm_qry: np.ndarray, features: torch.Tensor,
                        query: torch.Tensor, k: int) -> np.ndarray:
    knn_qry = knn(0, sm_qry, k)
    built = torch.zeros_like(features)
    for idx in range(len(sm_img)):
        knn_img = knn(idx, sm_img, k)
        count = (len([p for p in knn_img if is_k_reciprocal_with_query(p, sm_img, sm_qry, k)])
                 + len([p for p in knn_qry if is_k_reciprocal(p, idx, sm_img, k)])
                 + is_k_reciprocal_with_query(idx, sm_img, sm_qry, k))
        s = torch.from_numpy(sm_qry[0][knn_img])
        if count > 0 and float(s.sum()) != 0:
            built[idx] = count * (s / s.sum())[:, None].mul(features[knn_img]).sum(0)
    distance = 1 - torch.cosine_similarity(query[None, :], built, dim=-1)
    return sm_qry[0] - distance.numpy()


def rerank_one(text: torch.Tensor, images: torch.Tensor, mirrored: torch.Tensor | None,
               how: Rerank) -> np.ndarray:
    """The A3R score of each candidate (rows of `images`, first-stage order) for one text query."""
    n = len(images)
    m, k = min(how.m, n), min(how.k, n)
    txt = torch.cosine_similarity(text[None, None, :], images, dim=-1)[0]
    query = pca_query(txt[:m], images[:m], text) if how.adapted_query else text
    sm_img = torch.cosine_similarity(images[:, None], images, dim=-1)
    sm_qry = torch.cosine_similarity(query[None, None, :], images, dim=-1)
    if mirrored is not None:
        sm_img = torch.max(sm_img, torch.cosine_similarity(images[:, None], mirrored, dim=-1))
        sm_qry = torch.max(sm_qry, torch.cosine_similarity(query[None, None, :], mirrored, dim=-1))
    sm_img, sm_qry = sm_img.numpy(), sm_qry.numpy()
    if how.reciprocal == "quantified":
        return quantified_similarity(sm_img, sm_qry, k)
    if how.reciprocal == "embedded":
        return embedded_similarity(sm_img, sm_qry, images, query, k)
    return sm_qry[0]


def reference_rerank(query_emb: torch.Tensor, gallery_emb: torch.Tensor, gallery_flip: torch.Tensor | None,
                     candidates: torch.Tensor, how: Rerank, kinds: Sequence[str], k: int = 10) -> np.ndarray:
    """(queries, k) gallery rows: the port, one query after the other (float64, as the kit)."""
    out = np.empty((len(query_emb), k), dtype=np.int64)
    for q in range(len(query_emb)):
        rows = candidates[q, :min(how.depth(kinds[q]), len(gallery_emb))]
        images = gallery_emb[rows].double()
        mirrored = gallery_flip[rows].double() if how.flip else None
        sim = rerank_one(query_emb[q].double(), images, mirrored, how)
        order = np.lexsort((rows.numpy(), -sim))  # by score, ties by gallery index
        out[q] = rows.numpy()[order[:k]]
    return out


# --- the benchmark ---------------------------------------------------------------------------------

def embeddings(queries: int, gallery: int, dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random normalised embeddings shaped like a CLIP model's: a direction all images share,
    identities of about 8 images (cosine about 0.9 within one, 0.45 across), mirrors at about 0.96,
    text queries off by a common modality offset (cosine about 0.4 with their identity's images), so
    that the reciprocal tests have neighbourhoods to find."""
    g = torch.Generator().manual_seed(seed)

    def noise(n: int) -> torch.Tensor:  # rows of norm about 1
        return torch.randn(n, dim, generator=g) / dim ** 0.5

    common, offset = F.normalize(noise(2), dim=1)
    centres = F.normalize(noise(max(1, gallery // 8)), dim=1)
    images = F.normalize(common + centres[torch.randint(len(centres), (gallery,), generator=g)]
                         + 0.5 * noise(gallery), dim=1)
    mirrors = F.normalize(images + 0.3 * noise(gallery), dim=1)
    wanted = centres[torch.randint(len(centres), (queries,), generator=g)]
    text = F.normalize(2 * offset + 0.5 * common + wanted + 0.7 * noise(queries), dim=1)
    return {"query": text, "gallery": images, "mirror": mirrors}


def a3r(depth: int, reciprocal: str = "embedded", **changes: Any) -> Rerank:
    """The reference's A3R settings (m = k = 10, flip, adapted query) at depth N for every query."""
    values = {"method": "a3r", "depth_car": depth, "depth_person": depth, "m": 10, "k": 10, "flip": True,
              "adapted_query": True, "reciprocal": reciprocal, "alpha": 3.0, "lam": 0.3, "k2": 6} | changes
    return Rerank(**values)


def bench_rerank(queries: int, gallery: int, dim: int, depth: int, repeats: int, full_size: int,
                 full_dim: int, race: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """The kit against the port on `queries` queries at depth N (the reference's settings, embedded form;
    `race` is tools.bench.bench.race), the rankings asserted equal (and for the quantified form on a
    subset); then the kit alone on `full_size` queries x `full_size` images of `full_dim` (0: skipped)."""
    data = embeddings(queries, gallery, dim)
    kinds = ["person"] * queries
    _, cand = topk(data["query"], data["gallery"], k=depth)
    how = a3r(depth)

    def peer_run(n: int = queries, settings: Rerank = how) -> np.ndarray:
        return reference_rerank(data["query"][:n], data["gallery"], data["mirror"], cand[:n], settings,
                                kinds[:n])

    def kit_run(n: int = queries, settings: Rerank = how) -> np.ndarray:
        return rerank(data["query"][:n], data["gallery"], cand[:n], settings, kinds=kinds[:n],
                      gallery_flip=data["mirror"])[1].numpy()

    few = max(1, queries // 8)
    raced = race(peer_run, kit_run, repeats, warmup=(lambda: peer_run(few), lambda: kit_run(few)))
    checked = {"embedded": (raced["kit_result"], raced["peer_result"])}
    subset = min(queries, 50)
    quantified = a3r(depth, "quantified")
    checked["quantified"] = (kit_run(subset, quantified), peer_run(subset, quantified))
    identical = {}
    for form, (kit, peer) in checked.items():
        same = (kit == peer).all(axis=1)
        if not same.all():
            raise AssertionError(f"rerank ({form}): the kit and the port rank {int((~same).sum())} of "
                                 f"{len(same)} queries differently")
        identical[form] = {"queries": len(same), "identical_rows": float(same.mean())}
    sides = {side: {"best_s": min(raced[f"{side}_times"]),
                    "best_queries_per_s": queries / min(raced[f"{side}_times"]),
                    "times_s": [round(t, 4) for t in raced[f"{side}_times"]]} for side in ("kit", "peer")}
    report = {"queries": queries, "gallery": gallery, "dim": dim, "depth": depth, "m": how.m, "k": how.k,
              "form": how.reciprocal, "flip": how.flip, "checked": identical, **sides,
              "ratio": sides["peer"]["best_s"] / sides["kit"]["best_s"]}
    if full_size:
        report["full_size"] = full_size_run(full_size, full_dim, depth)
    return report


def full_size_run(size: int, dim: int, depth: int) -> dict[str, Any]:
    """The kit's A3R re-ranking of `size` queries over `size` images, every query at depth N, both forms
    (the first stage untimed but reported): wall time, this process's CPU time (what a busy machine
    does not inflate) and the load average before each."""
    data = embeddings(size, size, dim, seed=1)
    t0 = time.perf_counter()
    _, cand = topk(data["query"], data["gallery"], k=depth)
    first = time.perf_counter() - t0
    wall, cpu, loads = {}, {}, {}
    for form in ("embedded", "quantified"):
        loads[form] = round(os.getloadavg()[0], 2)
        t0, c0 = time.perf_counter(), time.process_time()
        rerank(data["query"], data["gallery"], cand, a3r(depth, form), kinds=["person"] * size,
               gallery_flip=data["mirror"])
        wall[form], cpu[form] = round(time.perf_counter() - t0, 2), round(time.process_time() - c0, 2)
    return {"queries": size, "gallery": size, "dim": dim, "depth": depth,
            "first_stage_topk_s": round(first, 2), "rerank_s": wall, "rerank_cpu_s": cpu,
            "load_avg_1min_before": loads}
