"""lib.eval.rerank: a hand-computed case, the per-query port of the notebook (same rankings), flip TTA,
the r = 2k rule, ties and determinism, the baselines against plain loops, the settings from a Config."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib import config
from lib.eval import rerank as rr
from lib.eval.topk import topk
from tools.bench.rerank import embeddings, reference_rerank

# The hand case lives in the plane orthogonal to (1, 1, 1), so that PCA's centring of each vector's
# coordinates leaves it unchanged: a vector at angle t is cos t * U1 + sin t * U2.
U1 = np.array([1.0, -1.0, 0.0]) / math.sqrt(2)
U2 = np.array([1.0, 1.0, -2.0]) / math.sqrt(6)


def at(degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    return math.cos(t) * U1 + math.sin(t) * U2


def cosd(degrees: float) -> float:
    return math.cos(math.radians(degrees))


def how(method: str = "a3r", depth: int = 5, **changes) -> rr.Rerank:
    values = dict(method=method, depth_car=depth, depth_person=depth, m=2, k=2, flip=False,
                  adapted_query=False, reciprocal="quantified", alpha=3.0, lam=0.3, k2=1) | changes
    return rr.Rerank(**values)


# Query at 0 degrees; candidates A 10, B 22, C 30, D 100, E 115 (first-stage order A, B, C, D, E).
# Gallery rows: E=0, D=1, A=2, B=3, C=4, so that a tie between D and E shows the gallery-index rule.
ANGLES = {"E": 115, "D": 100, "A": 10, "B": 22, "C": 30}
NAMES = list(ANGLES)


def hand_case():
    gallery = torch.tensor(np.stack([at(a) for a in ANGLES.values()]))
    query = torch.tensor(at(0))[None]
    candidates = torch.tensor([[NAMES.index(n) for n in "ABCDE"]])
    return query, gallery, candidates


def test_hand_computed_quantified_case_with_r_equal_2k():
    """k = 2. kNN (itself + nearest): A {A,B}, B {B,C}, C {C,B}, D {D,E}, E {E,D}; the query's: {A,B}.
    Only A has fewer than 2 candidates closer to it than the query (only itself): A is reciprocal with
    the query, B and C are not (each has itself and two neighbours closer). Mutual pairs: B-C, D-E.
    c = |{A,B} ∩ kNN(i)| + 2: A 4, B 3, C 3, D 2, E 2.
    r = via kNN(i) + via kNN(q) + 2 [i with q]: A 1+1+2 = 4 = 2k, B 0+1+0, C 0+1+0, D 0, E 0.
    Capped at 2k - 1 = 3, the weights x / (4 - x): A 3 * 3, B 3 * 1/3, C 3 * 1/3, D 1 * 0, E 1 * 0
    (the notebook's formula divides by zero for A's c and r)."""
    query, gallery, candidates = hand_case()
    scores, idx = rr.rerank(query, gallery, candidates, how(), kinds=["car"], k=5)
    expected = {"A": cosd(10) * 9, "B": cosd(22) * 1, "C": cosd(30) * 1, "E": 0.0, "D": 0.0}
    assert [NAMES[i] for i in idx[0].tolist()] == ["A", "B", "C", "E", "D"]  # D, E tie: gallery index
    assert scores[0].tolist() == pytest.approx(list(expected.values()), abs=1e-6)


def test_hand_computed_embedded_case():
    """Same sets; n (r with the last term once): A 3, B 1, C 1, D 0, E 0. f_i = the s-weighted mean of
    kNN(i); D and E have none (cos 0). score = s - (1 - cos(q, f_i))."""
    query, gallery, candidates = hand_case()
    scores, idx = rr.rerank(query, gallery, candidates, how(reciprocal="embedded"), kinds=["car"], k=5)

    def mean_angle_cos(a: float, b: float) -> float:  # cos(q, cos a * v_a + cos b * v_b)
        f = cosd(a) * at(a) + cosd(b) * at(b)
        return float(f @ at(0) / np.linalg.norm(f))

    expected = {"A": cosd(10) - 1 + mean_angle_cos(10, 22), "B": cosd(22) - 1 + mean_angle_cos(22, 30),
                "C": cosd(30) - 1 + mean_angle_cos(22, 30), "D": cosd(100) - 1, "E": cosd(115) - 1}
    assert [NAMES[i] for i in idx[0].tolist()] == ["A", "B", "C", "D", "E"]
    assert scores[0].tolist() == pytest.approx(list(expected.values()), abs=1e-6)


def test_adapted_query_by_hand():
    """m = 2: the lower similarity weighs 0, so the component is the more similar image itself (its
    coordinates sum to 0: the centring leaves it), with the text's sign (for the opposite text the
    other image is the more similar one). Equal similarities weigh 1 each: two images at +-20 degrees
    of the text give their bisector."""
    text = torch.tensor(at(0))[None]
    top = torch.tensor(np.stack([at(10), at(22)]))[None]
    assert torch.allclose(rr.adapted_query(text, top)[0], torch.tensor(at(10)), atol=1e-9)
    assert torch.allclose(rr.adapted_query(-text, top)[0], -torch.tensor(at(22)), atol=1e-9)
    pair = torch.tensor(np.stack([at(20), at(-20)]))[None]
    assert torch.allclose(rr.adapted_query(text, pair)[0], torch.tensor(at(0)), atol=1e-9)


def test_jaccard_weight_caps_counts_at_2k_minus_1():
    k = 4
    counts = torch.arange(0, 2 * k + 3, dtype=torch.float64)
    weights = rr.jaccard_weight(counts, k)
    assert torch.isfinite(weights).all() and (weights >= 0).all() and (weights.diff() >= 0).all()
    below = counts < 2 * k - 1
    assert torch.equal(weights[below], counts[below] / (2 * k - counts[below]))
    assert (weights[~below] == 2 * k - 1).all()  # r = 2k and above: the largest finite weight


# --- against the per-query port of the notebook ------------------------------------------------


@pytest.mark.parametrize("form", rr.RECIPROCAL_FORMS)
@pytest.mark.parametrize("flip, adapted", [(True, True), (False, True), (True, False)])
def test_same_rankings_as_the_per_query_port(form, flip, adapted):
    data = embeddings(14, 120, 24, seed=3)
    kinds = ["car", "person"] * 7
    settings = how(depth_car=8, depth_person=12, m=4, k=4, flip=flip, adapted_query=adapted, reciprocal=form)
    _, cand = topk(data["query"], data["gallery"], k=12)
    scores, idx = rr.rerank(data["query"], data["gallery"], cand, settings, kinds=kinds,
                            gallery_flip=data["mirror"], k=5)
    peer = reference_rerank(data["query"], data["gallery"], data["mirror"], cand, settings, kinds, k=5)
    assert np.array_equal(idx.numpy(), peer)
    assert all(set(row) <= set(c[:8 if kind == "car" else 12].tolist())
               for row, c, kind in zip(idx.tolist(), cand, kinds))
    assert (scores.diff(dim=1) <= 0).all()


# --- flip test-time augmentation ----------------------------------------------------------------


def test_flip_takes_the_max_over_the_image_and_its_mirror():
    g = torch.Generator().manual_seed(0)
    a, b, b_flip = (F.normalize(torch.randn(3, 5, 8, generator=g), dim=-1) for _ in range(3))
    sims = a @ b.transpose(1, 2)
    assert torch.equal(rr.flip_max(sims, a, b_flip), torch.maximum(sims, a @ b_flip.transpose(1, 2)))
    assert rr.flip_max(sims, a, None) is sims
    # end to end, without adaption or neighbours the score is max(q.g, q.g_mirror)
    data = embeddings(6, 40, 16, seed=1)
    _, cand = topk(data["query"], data["gallery"], k=10)
    settings = how(depth=10, k=3, flip=True, reciprocal="none")
    scores, idx = rr.rerank(data["query"], data["gallery"], cand, settings, kinds=["car"] * 6,
                            gallery_flip=data["mirror"], k=10)
    best = torch.maximum(data["query"] @ data["gallery"].T, data["query"] @ data["mirror"].T).double()
    assert torch.allclose(scores.double(), best.gather(1, idx), atol=1e-6)
    assert torch.equal(rr.rerank(data["query"], data["gallery"], cand, settings, kinds=["car"] * 6,
                                 gallery_flip=data["gallery"], k=10)[1],
                       rr.rerank(data["query"], data["gallery"], cand, how(depth=10, k=3, reciprocal="none"),
                                 kinds=["car"] * 6, k=10)[1])  # a mirror equal to the image changes nothing


def test_flip_needs_the_mirrored_gallery():
    query, gallery, candidates = hand_case()
    with pytest.raises(rr.RerankError, match="mirrored"):
        rr.rerank(query, gallery, candidates, how(flip=True), kinds=["car"], k=5)


# --- ties, determinism, shapes ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["a3r", "aqe", "kreciprocal", "none"])
def test_deterministic_and_independent_of_the_chunk(method):
    data = embeddings(20, 100, 16, seed=2)
    _, cand = topk(data["query"], data["gallery"], k=10)
    settings = how(method, depth=10, m=3, k=3, flip=True, adapted_query=True, reciprocal="embedded", k2=2)
    runs = [rr.rerank(data["query"], data["gallery"], cand, settings, kinds=["person"] * 20,
                      gallery_flip=data["mirror"], k=4, chunk=chunk) for chunk in (1, 7, 256)]
    for scores, idx in runs[1:]:
        assert torch.equal(idx, runs[0][1]) and torch.equal(scores, runs[0][0])


def test_duplicate_images_tie_to_the_smaller_gallery_index():
    """Rows 1 and 3 hold the same embedding, as do 0 and 2: every method scores them equal, and the
    smaller gallery index comes first whatever the first-stage order."""
    g = torch.Generator().manual_seed(5)
    base = F.normalize(torch.randn(2, 6, generator=g), dim=1)
    gallery = torch.stack([base[0], base[1], base[0], base[1]])
    query = F.normalize(base[1] + 0.2 * base[0], dim=0)[None]
    for method in ("a3r", "aqe", "kreciprocal", "none"):
        settings = how(method, depth=4, m=2, k=2, flip=True, adapted_query=True, reciprocal="none")
        for order in ([3, 1, 2, 0], [1, 3, 0, 2]):
            _, idx = rr.rerank(query, gallery, torch.tensor([order]), settings, kinds=["car"],
                               gallery_flip=gallery, k=4)
            assert idx[0].tolist() in ([1, 3, 0, 2], [0, 2, 1, 3]), (method, order, idx)
            assert idx[0, 0] < idx[0, 1] and idx[0, 2] < idx[0, 3]


def test_depth_per_kind_and_none_is_the_first_stage():
    data = embeddings(4, 60, 16, seed=4)
    scores, cand = topk(data["query"], data["gallery"], k=20)
    kinds = ["car", "person", "car", "person"]
    first = rr.rerank(data["query"], data["gallery"], cand, how("none"), kinds=kinds, k=5)
    assert torch.equal(first[1], cand[:, :5]) and torch.allclose(first[0], scores[:, :5], atol=1e-6)
    _, idx = rr.rerank(data["query"], data["gallery"], cand, how("aqe", depth_car=6, depth_person=20, m=3),
                       kinds=kinds, k=5)
    assert all(set(idx[q].tolist()) <= set(cand[q, :6].tolist()) for q in (0, 2))
    with pytest.raises(rr.RerankError, match="N must be >= k"):
        rr.rerank(data["query"], data["gallery"], cand, how("aqe", depth=4), kinds=kinds, k=5)
    with pytest.raises(rr.RerankError, match="candidates per query"):
        rr.rerank(data["query"], data["gallery"], cand[:, :10], how("aqe", depth=20), kinds=kinds, k=5)


# --- baselines against plain loops ----------------------------------------------------------------


def test_alpha_query_expansion():
    data = embeddings(5, 50, 16, seed=6)
    _, cand = topk(data["query"], data["gallery"], k=12)
    _, idx = rr.rerank(data["query"], data["gallery"], cand, how("aqe", depth=12, m=3, alpha=2.0),
                       kinds=["car"] * 5, k=6)
    for q in range(5):
        text, images = data["query"][q].double(), data["gallery"][cand[q]].double()
        weights = (images[:3] @ text).clamp_min(0) ** 2.0
        expanded = F.normalize(text + (weights[:, None] * images[:3]).sum(0), dim=0)
        order = np.lexsort((cand[q].numpy(), -(images @ expanded).numpy()))
        assert idx[q].tolist() == cand[q].numpy()[order[:6]].tolist()


def zhong_loop(text: torch.Tensor, images: torch.Tensor, k: int, k2: int, lam: float) -> np.ndarray:
    """Zhong et al.'s steps for one text query over its candidates, with Python sets."""
    n = len(images)
    sims, t = (images @ images.T).numpy(), (images @ text).numpy()

    def nearest(row: np.ndarray, count: int) -> list[int]:
        return np.argsort(-row, kind="stable")[:count].tolist()

    def reciprocal(i: int, count: int) -> set[int]:
        return {j for j in nearest(sims[i], count) if i in nearest(sims[j], count)}

    def expand(base: set[int]) -> set[int]:
        out = set(base)
        for j in base:
            half = reciprocal(j, (k + 1) // 2)
            if len(half & base) > 2 / 3 * len(half):
                out |= half
        return out

    def encode(members: set[int], similarity: np.ndarray) -> np.ndarray:
        v = np.zeros(n)
        for j in members:
            v[j] = math.exp(similarity[j] - 1)
        return v / v.sum()

    v = np.stack([encode(expand(reciprocal(i, k)), sims[i]) for i in range(n)])
    vq = encode(expand(set(nearest(t, k))), t)
    if k2 > 1:
        vq = (vq + sum(v[j] for j in nearest(t, k2 - 1))) / k2
        v = np.stack([v[nearest(sims[i], k2)].mean(0) for i in range(n)])
    jaccard = 1 - np.minimum(vq, v).sum(1) / np.maximum(vq, v).sum(1)
    return -((1 - lam) * jaccard + lam * (1 - t))


@pytest.mark.parametrize(("k", "k2"), [(5, 1), (5, 3), (7, 1)])
def test_k_reciprocal_baseline_matches_a_plain_loop(k, k2):
    """k = 7 expands by R(j, 4) (the ceiling of 7/2): on these queries R(j, 3) gives other scores for
    every query, where k = 5's two roundings happen to agree."""
    data = embeddings(6, 80, 16, seed=7)
    _, cand = topk(data["query"], data["gallery"], k=15)
    settings = how("kreciprocal", depth=15, k=k, k2=k2, lam=0.3)
    scores, idx = rr.rerank(data["query"], data["gallery"], cand, settings, kinds=["person"] * 6, k=15)
    for q in range(6):
        ordered = cand[q].sort().values  # the kit works in gallery order: so does the loop
        expected = zhong_loop(data["query"][q].double(), data["gallery"][ordered].double(), k, k2, 0.3)
        order = np.lexsort((ordered.numpy(), -expected))
        assert idx[q].tolist() == ordered.numpy()[order].tolist()
        assert scores[q].numpy() == pytest.approx(expected[order], abs=1e-6)


# --- settings -----------------------------------------------------------------------------------


def test_settings_from_the_config():
    assert not rr.settings(config.Config()).active  # the reference recipe submits the first stage
    cfg = config.Config(rerank="a3r", rerank_depth_car=30, rerank_m=5, a3r_reciprocal="quantified",
                        a3r_flip=False)
    s = rr.settings(cfg)
    assert (s.method, s.depth("car"), s.depth("person"), s.m, s.k, s.reciprocal) == ("a3r", 30, 50, 5, 10,
                                                                                      "quantified")
    assert not s.needs_flip and s.max_depth == 50
    assert rr.settings(dataclasses.replace(cfg, a3r_flip=True)).needs_flip
    assert not rr.settings(config.Config(rerank="aqe")).needs_flip
