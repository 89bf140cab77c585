"""Re-ranking each query's first-stage top-N: A3R's adaption re-ranking, and two baselines.

A3R: arXiv 2306.06691 (the reference's reranking.ipynb); aQE: Radenovic et al. What each does, and
where A3R departs from the notebook: docs/reranking.md. Float64, so that near-ties rank as in the
per-query port tools.bench.rerank, which the tests and the bench hold it to.

A3R's formulas. Adapted query: PCA as the notebook's sklearn call does it, the d coordinates being the
samples (each weighted embedding minus its mean coordinate, then the leading singular vector).
k-reciprocal, k = `rerank_k`, among the N candidates plus the query: kNN(i) = i's k most similar
candidates (itself included), kNN(q) = the query's; p and the query are k-reciprocal when p is in
kNN(q) and fewer than k candidates are more similar to p than the query is. Per candidate i, with
s = its query similarity:
  c = |kNN(q) ∩ kNN(i)| + 2,
  r = #{p in kNN(i) reciprocal with q} + #{p in kNN(q) reciprocal with i} + 2 [i reciprocal with q]
  `quantified`: s · c/(2k - c) · r/(2k - r), counts capped at 2k - 1 (docs/reranking.md, point 3);
  `embedded`: n = r with the last term counted once; f_i = the s-weighted mean of kNN(i)'s embeddings
  (zero when n = 0); score = s - (1 - cos(query, f_i)).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lib.errors import KitError

METHODS = ("none", "a3r", "aqe", "kreciprocal")
RECIPROCAL_FORMS = ("embedded", "quantified", "none")


class RerankError(KitError, ValueError):
    """Re-ranking cannot run on what it was given."""


@dataclass(frozen=True)
class Rerank:
    """A run's re-ranking settings (the Config keys they come from: `settings`)."""

    method: str
    depth_car: int  # N, the first-stage candidates re-ranked per car query
    depth_person: int
    m: int  # top images that build the adapted (A3R) or expanded (aQE) query
    k: int  # neighbourhood size of the k-reciprocal tests (A3R, Zhong)
    flip: bool  # A3R: max over the image and its mirror
    adapted_query: bool  # A3R: the adapted query instead of the text one
    reciprocal: str  # A3R: embedded | quantified | none
    alpha: float  # aQE's exponent
    lam: float  # Zhong's lambda: the weight of the text distance
    k2: int  # Zhong's local query expansion

    @property
    def active(self) -> bool:
        return self.method != "none"

    @property
    def needs_flip(self) -> bool:
        return self.method == "a3r" and self.flip

    @property
    def max_depth(self) -> int:
        return max(self.depth_car, self.depth_person) if self.active else 0

    def depth(self, kind: str) -> int:
        return self.depth_car if kind == "car" else self.depth_person


def settings(cfg: Any) -> Rerank:
    return Rerank(method=cfg.rerank, depth_car=cfg.rerank_depth_car, depth_person=cfg.rerank_depth_person,
                  m=cfg.rerank_m, k=cfg.rerank_k, flip=cfg.a3r_flip, adapted_query=cfg.a3r_adapted_query,
                  reciprocal=cfg.a3r_reciprocal, alpha=cfg.aqe_alpha, lam=cfg.kreciprocal_lambda,
                  k2=cfg.kreciprocal_k2)


def rerank(query_emb: torch.Tensor, gallery_emb: torch.Tensor, candidates: torch.Tensor, how: Rerank, *,
           kinds: Sequence[str], gallery_flip: torch.Tensor | None = None, k: int = 10, chunk: int = 256,
           dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices), each (queries, k): the k best of each query's first N = how.depth(kind)
    `candidates` (best first, lib.eval.topk; N capped at the gallery size), re-ranked. Scores: float32,
    on the method's scale; method "none" keeps the first k, scored by the text similarity."""
    if how.needs_flip and gallery_flip is None:
        raise RerankError("A3R with flip needs the mirrored gallery's embeddings (gallery_flip)")
    if len(kinds) != len(query_emb) or len(candidates) != len(query_emb):
        raise RerankError(f"{len(query_emb)} queries, {len(candidates)} candidate rows, {len(kinds)} kinds")
    n_queries = len(query_emb)
    out_scores = torch.empty(n_queries, k, dtype=torch.float32)
    out_idx = torch.empty(n_queries, k, dtype=torch.long)
    depths = torch.tensor([min(how.depth(kind) if how.active else k, len(gallery_emb)) for kind in kinds],
                          dtype=torch.long)
    if n_queries and (depths < k).any():
        raise RerankError(f"re-ranking keeps k={k} of N={int(depths.min())} candidates: N must be >= k")
    if n_queries and candidates.shape[1] < int(depths.max()):
        raise RerankError(f"{candidates.shape[1]} first-stage candidates per query, re-ranking needs "
                          f"{int(depths.max())}")
    gallery_emb = gallery_emb.to(dtype)  # once: gathering rows of the wanted type is the cheapest copy
    gallery_flip = gallery_flip.to(dtype) if how.needs_flip else None
    # buffers made once: a fresh (chunk, N, d) tensor per chunk costs more in page faults than the gather
    size = chunk * (int(depths.max()) if n_queries else 0)
    buffers = [torch.empty(size, gallery_emb.shape[1], dtype=dtype) for _ in range(1 + how.needs_flip)]
    for depth in depths.unique().tolist():
        rows = (depths == depth).nonzero()[:, 0]
        for start in range(0, len(rows), chunk):
            sel = rows[start:start + chunk]
            scores, idx = _rerank_rows(query_emb[sel], gallery_emb, gallery_flip, candidates[sel, :depth],
                                       how, k, dtype, buffers)
            out_scores[sel], out_idx[sel] = scores.float(), idx
    return out_scores, out_idx


def _rerank_rows(query: torch.Tensor, gallery: torch.Tensor, gallery_flip: torch.Tensor | None,
                 cand: torch.Tensor, how: Rerank, k: int, dtype: torch.dtype,
                 buffers: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of queries with the same N. Candidates go in gallery order first, so that every
    stable sort below breaks ties by gallery index; `rank` keeps their first-stage order."""
    cand, rank = cand.sort(dim=1, stable=True)
    q = query.to(dtype)
    flat, shape = cand.reshape(-1), (*cand.shape, gallery.shape[1])
    g = torch.index_select(gallery, 0, flat, out=buffers[0][:len(flat)]).view(shape)  # (B, N, d)
    g_flip = (torch.index_select(gallery_flip, 0, flat, out=buffers[1][:len(flat)]).view(shape)
              if gallery_flip is not None else None)
    top = rank.argsort(dim=1)  # top[:, r] = the position of the first-stage rank r
    if how.method == "a3r":
        scores = a3r_scores(q, g, g_flip, top, how)
    elif how.method == "aqe":
        scores = aqe_scores(q, g, top[:, :min(how.m, g.shape[1])], how.alpha)
    elif how.method == "kreciprocal":
        scores = kreciprocal_scores(q, g, how.k, how.k2, how.lam)
    else:
        scores = torch.einsum("bnd,bd->bn", g, q)
    if torch.isnan(scores).any():
        raise RerankError("re-ranking produced NaN scores: check the embeddings (all finite, non-zero?)")
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), cand.gather(1, order)


def adapted_query(text: torch.Tensor, top_images: torch.Tensor) -> torch.Tensor:
    """(B, d) unit vectors: the first principal component of the top-m images (B, m, d) weighted by
    their min-max scaled text similarity (all 1 when equal), its sign the text's (module docstring)."""
    sims = torch.einsum("bmd,bd->bm", top_images, text)
    low, high = sims.min(1, keepdim=True).values, sims.max(1, keepdim=True).values
    spread = high - low
    weights = torch.where(spread > 0, (sims - low) / spread.clamp_min(torch.finfo(sims.dtype).tiny),
                          torch.ones_like(sims))
    x = weights[..., None] * top_images
    x = x - x.mean(dim=2, keepdim=True)
    _, vectors = torch.linalg.eigh(x @ x.transpose(1, 2))  # (B, m, m), eigenvalues ascending
    component = torch.einsum("bm,bmd->bd", vectors[..., -1], x)
    sign = torch.where(torch.einsum("bd,bd->b", component, text) < 0, -1.0, 1.0).to(component.dtype)
    return F.normalize(component * sign[:, None], dim=1)


def flip_max(sims: torch.Tensor, a: torch.Tensor, b_flip: torch.Tensor | None) -> torch.Tensor:
    """sims = a @ b^T (batched), maxed with a @ b_flip^T: only b is mirrored, as in the notebook."""
    return sims if b_flip is None else torch.maximum(sims, a @ b_flip.transpose(1, 2))


def knn_mask(sims: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of each row's k largest entries (last dimension), ties to the smaller column."""
    kth = sims.topk(k, dim=-1).values[..., -1:]
    above, equal = sims > kth, sims == kth
    room = k - above.sum(-1, keepdim=True)
    return above | (equal & (equal.cumsum(-1) <= room))


def reciprocal_counts(s_q: torch.Tensor, s_img: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """The terms of c and r (module docstring), (B, N) each in s_q's dtype: common = |kNN(q) ∩ kNN(i)|,
    r's two sums via_images and via_query, with_query; and `knn`, the neighbourhoods (B, N, N) as 0/1."""
    knn_q = knn_mask(s_q, k).to(s_q.dtype)
    knn = knn_mask(s_img, k).to(s_q.dtype)
    query_in = (s_img > s_q[..., None]).sum(-1) < k  # the query ranks before ties: it is not a candidate
    with_query = knn_q * query_in
    counts = knn @ torch.stack([knn_q, with_query], dim=2)  # sums over each image's neighbours
    via_query = ((knn * knn.transpose(1, 2)) @ knn_q[..., None])[..., 0]  # mutual neighbours in kNN(q)
    return {"common": counts[..., 0], "via_images": counts[..., 1], "via_query": via_query,
            "with_query": with_query, "knn": knn}


def jaccard_weight(count: torch.Tensor, k: int) -> torch.Tensor:
    """count / (2k - count), the count capped at 2k - 1 (see the module docstring)."""
    count = count.clamp(max=2 * k - 1)
    return count / (2 * k - count)


def a3r_scores(q: torch.Tensor, g: torch.Tensor, g_flip: torch.Tensor | None, top: torch.Tensor,
               how: Rerank) -> torch.Tensor:
    """(B, N) A3R scores of candidates g (B, N, d) for text queries q (B, d); `top`: first-stage order."""
    n = g.shape[1]
    m, k = min(how.m, n), min(how.k, n)
    rows = torch.arange(len(g))[:, None]
    query = adapted_query(q, g[rows, top[:, :m]]) if how.adapted_query else q
    s_plain = torch.einsum("bnd,bd->bn", g, query)
    s_q = flip_max(s_plain[:, None, :], query[:, None, :], g_flip)[:, 0]
    if how.reciprocal == "none":
        return s_q
    gram = g @ g.transpose(1, 2)
    counts = reciprocal_counts(s_q, flip_max(gram, g, g_flip), k)
    if how.reciprocal == "quantified":
        r = counts["via_images"] + counts["via_query"] + 2 * counts["with_query"]
        return s_q * jaccard_weight(counts["common"] + 2, k) * jaccard_weight(r, k)
    return s_q - (1 - embedded_cosine(counts, s_q, s_plain, gram, query))


def embedded_cosine(counts: dict[str, torch.Tensor], s_q: torch.Tensor, s_plain: torch.Tensor,
                    gram: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """(B, N) cos(query, f_i) from the Gram matrix, without building the (B, N, d) features:
    f_i . query = w_i . s_plain and |f_i|^2 = w_i^T gram w_i, up to the same 1 / sum(w_i)."""
    reciprocal = counts["via_images"] + counts["via_query"] + counts["with_query"]
    weights = counts["knn"] * s_q[:, None, :]
    total = weights.sum(-1)
    dot = (weights @ s_plain[..., None])[..., 0]
    norm = ((weights @ gram) * weights).sum(-1).clamp_min(0).sqrt() * query.norm(dim=-1, keepdim=True)
    valid = (reciprocal > 0) & (total != 0) & (norm > 0)
    return torch.where(valid, dot * total.sign() / torch.where(valid, norm, 1.0), 0.0)


def aqe_scores(q: torch.Tensor, g: torch.Tensor, top: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B, N): alpha query expansion, the text query plus the top images (positions `top`, (B, m))."""
    sims = torch.einsum("bnd,bd->bn", g, q)
    weights = sims.gather(1, top).clamp_min(0) ** alpha
    top_images = g.gather(1, top[..., None].expand(-1, -1, g.shape[2]))
    expanded = F.normalize(q + torch.einsum("bm,bmd->bd", weights, top_images), dim=1)
    return torch.einsum("bnd,bd->bn", g, expanded)


def kreciprocal_scores(q: torch.Tensor, g: torch.Tensor, k: int, k2: int, lam: float) -> torch.Tensor:
    """(B, N): Zhong et al.'s k-reciprocal encoding, Jaccard distance and lambda, for a text query."""
    n = g.shape[1]
    k, half, k2 = min(k, n), min((k + 1) // 2, n), min(k2, n)
    text = torch.einsum("bnd,bd->bn", g, q)
    sims = g @ g.transpose(1, 2)
    knn = knn_mask(sims, k)
    mutual = knn & knn.transpose(1, 2)
    knn_half = knn_mask(sims, half)
    mutual_half = (knn_half & knn_half.transpose(1, 2)).to(sims.dtype)
    half_size = mutual_half.sum(-1)  # |R(j, k/2)|

    def expand(sets: torch.Tensor) -> torch.Tensor:
        """R(i) ∪ every R(j, k/2), j in R(i), that shares more than 2/3 of itself with R(i)."""
        overlap = sets.to(sims.dtype) @ mutual_half.transpose(1, 2)  # [i, j] = |R(i) ∩ R(j, k/2)|
        take = sets & (overlap > 2 / 3 * half_size[:, None, :])
        return sets | ((take.to(sims.dtype) @ mutual_half) > 0)

    def encode(sets: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
        v = sets * torch.exp(similarity - 1)  # exp(-(1 - cos))
        return v / v.sum(-1, keepdim=True)

    v_img = encode(expand(mutual), sims)  # (B, N, N)
    v_q = encode(expand(knn_mask(text, k)[:, None, :]), text[:, None, :])[:, 0]  # (B, N)
    if k2 > 1:  # local query expansion: the mean encoding of the k2 nearest (the query: itself + k2-1)
        v_q = (v_q + (knn_mask(text, k2 - 1)[:, None, :].to(sims.dtype) @ v_img)[:, 0]) / k2
        v_img = (knn_mask(sims, k2).to(sims.dtype) @ v_img) / k2
    v_q = v_q[:, None, :]
    jaccard = 1 - torch.minimum(v_q, v_img).sum(-1) / torch.maximum(v_q, v_img).sum(-1)
    return -((1 - lam) * jaccard + lam * (1 - text))
