"""lib.eval.topk: chunked top-k equals the full score matrix, ties broken by gallery index, groups masked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.eval.topk import topk


def _brute_force(q: torch.Tensor, g: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The full score matrix, each row ordered by (-score, index) with numpy's lexsort."""
    scores = (q @ g.T).numpy()
    order = np.stack([np.lexsort((np.arange(len(row)), -row)) for row in scores])[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("chunk", [1, 4, 7, 23, 1024])
@pytest.mark.parametrize("k", [1, 10, 37])
def test_topk_equals_brute_force(chunk, k):
    gen = torch.Generator().manual_seed(1)
    q, g = torch.randn(23, 8, generator=gen), torch.randn(37, 8, generator=gen)
    scores, idx = topk(q, g, k=k, chunk=chunk)
    want_scores, want_idx = _brute_force(q, g, k)
    assert idx.dtype == torch.long and idx.shape == (23, k)
    assert np.array_equal(idx.numpy(), want_idx)
    assert np.allclose(scores.numpy(), want_scores, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_topk_ties_broken_by_index(chunk):
    # Scores are exact in float32 (small integers), so duplicated gallery rows tie exactly, and
    # ties straddle rank k (the rows that torch.topk alone would decide arbitrarily).
    gen = torch.Generator().manual_seed(2)
    base = torch.randint(-1, 2, (4, 6), generator=gen).float()
    g = base[torch.randint(0, 4, (40,), generator=gen)]
    q = torch.randint(-1, 2, (9, 6), generator=gen).float()
    for k in (1, 5, 10, 40):
        scores, idx = topk(q, g, k=k, chunk=chunk)
        want_scores, want_idx = _brute_force(q, g, k)
        assert np.array_equal(idx.numpy(), want_idx) and np.array_equal(scores.numpy(), want_scores)


def test_topk_tie_example():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    g = torch.stack([b, a, b, a, a])
    scores, idx = topk(a[None], g, k=4)
    assert idx.tolist() == [[1, 3, 4, 0]] and scores.tolist() == [[1.0, 1.0, 1.0, 0.0]]
    assert topk(a[None], torch.stack([a] * 30), k=10, chunk=1)[1].tolist() == [list(range(10))]


def test_topk_refuses_k_larger_than_gallery():
    with pytest.raises(ValueError, match="k=5"):
        topk(torch.ones(2, 3), torch.ones(4, 3), k=5)


def test_topk_groups_mask_other_category():
    gen = torch.Generator().manual_seed(3)
    q, g = torch.randn(12, 5, generator=gen), torch.randn(30, 5, generator=gen)
    qg, gg = torch.arange(12) % 2, (torch.arange(30) % 3 == 0).long()  # 10 images of group 1
    scores, idx = topk(q, g, k=10, chunk=5, query_groups=qg, gallery_groups=gg)
    assert (gg[idx] == qg[:, None]).all()  # never an image of the other group
    full = q @ g.T
    for i in range(12):
        allowed = torch.nonzero(gg == qg[i]).flatten()
        best = allowed[torch.argsort(-full[i, allowed], stable=True)][:10]
        assert idx[i].tolist() == best.tolist()
    # a group with fewer than k images: the rest come last with -inf, by index
    s2, i2 = topk(q[:1], g, k=12, query_groups=torch.tensor([1]), gallery_groups=gg)
    assert torch.isinf(s2[0, 10:]).all() and i2[0, 10:].tolist() == [1, 2]


def test_topk_returns_ten_by_default_and_needs_0_lt_k_le_gallery():
    q, g = torch.eye(3, 4), torch.eye(12, 4)
    scores, idx = topk(q, g)
    assert scores.shape == idx.shape == (3, 10)
    # each query's own row first, then the rows that score 0, by index
    assert idx.tolist() == [list(range(10)), [1, 0, *range(2, 10)], [2, 0, 1, *range(3, 10)]]
    assert topk(q, g, k=12)[1].shape == (3, 12)  # k may be the whole gallery
    with pytest.raises(ValueError, match="0 < k <= gallery size, got k=0 for 12 gallery images"):
        topk(q, g, k=0)


def test_topk_of_no_queries_is_empty_with_the_usual_types():
    scores, idx = topk(torch.empty(0, 4), torch.eye(6, 4), k=5)
    assert scores.shape == idx.shape == (0, 5)
    assert scores.dtype == torch.float32 and idx.dtype == torch.long


def test_topk_refuses_groups_for_one_side_only():
    q, g = torch.eye(2, 3), torch.eye(4, 3)
    for groups in ({"query_groups": torch.zeros(2)}, {"gallery_groups": torch.zeros(4)}):
        with pytest.raises(ValueError) as err:
            topk(q, g, k=2, **groups)
        assert str(err.value) == "pass both query_groups and gallery_groups, or neither"


def test_topk_refuses_nan_naming_the_queries_of_the_chunk():
    q = torch.ones(5, 3)
    q[3, 1] = float("nan")
    with pytest.raises(ValueError) as err:
        topk(q, torch.eye(4, 3), k=2, chunk=2)  # chunks 0..1, 2..3, 4..4: the second one has the NaN
    assert str(err.value) == "NaN similarity in queries 2..3: check the embeddings"


def test_topk_takes_1024_queries_at_a_time_by_default():
    """1025 queries go as 1024 and then 1, bit for bit as with chunk=1024: the last bits of a float32
    score depend on how many rows share the matrix product, so the default chunk shows in the scores."""
    gen = torch.Generator().manual_seed(4)
    q, g = torch.randn(1025, 16, generator=gen), torch.randn(50, 16, generator=gen)
    scores, idx = topk(q, g)
    chunked = topk(q, g, chunk=1024)
    assert torch.equal(scores, chunked[0]) and torch.equal(idx, chunked[1])
