"""Top-k by dot product, `chunk` queries at a time (the 17,611² score matrix would take 1.2 GB), ties
to the smaller gallery index whatever torch.topk's order: the same embeddings give one ranking."""
from __future__ import annotations

import torch


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
    """(scores, indices), each (queries, k): the k best gallery rows per query, best first. With groups
    (one int per query / gallery image) a query ranks only its group's images: the others score -inf
    (they come last, by index, only when a group has fewer than k)."""
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
