"""lib.eval.rerank: a hand-computed case, the per-query port of the notebook (same rankings), flip TTA,
the r = 2k rule, ties and determinism, the baselines against plain loops, the settings from a Config."""
from __future__ import annotations

import dataclasses
import math
import re
import warnings

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


def at_plane(degrees: float) -> np.ndarray:
    """The unit vector of the plane (x, y) at this angle (for the methods without PCA)."""
    return np.array([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))])


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


@pytest.mark.parametrize("k", [2, 3])
def test_quantified_tie_between_an_image_and_the_query_goes_to_the_query(k):
    """Query (1, 0); P = (1, 0), I = (0.6, 0.8), C = (-0.6, 0.8): s = 1, 0.6, -0.6, exact. I's similarity
    to P equals the query's to I (0.6): the tie goes to the query, so only I itself is more similar to
    I than the query is, and I is reciprocal with it. k = 2: kNN P {P,I}, I {I,P}, C {C,I}, the query's
    {P,I}. c: P 4, I 4, C 3; r: P 2+2+2, I 2+2+2, C 1+0+0 (its neighbour I is reciprocal with the query);
    capped at 3, the weights x / (4 - x): P 3 * 3, I 3 * 3, C 3 * 1/3. k = 3 (d = 2 < k: k counts
    candidates): every set holds all three, c = 5 and r = 3+3+2 = 8 capped at 5: the score is 25 s."""
    gallery = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-0.6, 0.8]], dtype=torch.float64)
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    scores, idx = rr.rerank(query, gallery, torch.tensor([[0, 1, 2]]), how(depth=3, k=k), kinds=["car"], k=3)
    assert idx.tolist() == [[0, 1, 2]]
    weight = {2: [9, 9, 1], 3: [25, 25, 25]}[k]
    assert scores[0].tolist() == pytest.approx([w * s for w, s in zip(weight, [1.0, 0.6, -0.6])], abs=1e-6)


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


def test_embedded_cosine_is_that_of_the_signed_weighted_mean_at_any_query_length():
    """k = 2, in the plane, query (1, 0): A and X at s = 0.75 and 0.25, B at 0.5 and Y = -A (s -0.75).
    kNN (itself + nearest): A {A,X}, X {X,A}, B {B,Y}, Y {Y,B}; the query's {A,B}: every candidate has
    itself or its mutual neighbour in it (n > 0). The s-weights of A's and X's neighbourhood sum to
    exactly 1; B's and Y's to 0.5 - 0.75 = -0.25, so their mean feature (0.5 B - 0.75 Y) / -0.25 points
    away from the query (cos < 0, B's own s > 0 notwithstanding). Both weighted sums are shorter than 1.
    score = s - 1 + cos: A 0.396, X -0.104, B -1.497, Y -2.747. A query twice as long doubles s, and
    the cosine stays."""
    a, b, x = (math.sqrt(1 - s * s) for s in (0.75, 0.5, 0.25))
    pts = {"A": np.array([0.75, a]), "X": np.array([0.25, x]), "B": np.array([0.5, -b]),
           "Y": np.array([-0.75, -a])}
    gallery = torch.tensor(np.stack(list(pts.values())))
    settings = how(depth=4, reciprocal="embedded")

    def cos_of(weighted: dict[str, float]) -> float:  # cos(query, sign(sum w) * sum w_j p_j)
        f = sum(w * pts[n] for n, w in weighted.items()) * np.sign(sum(weighted.values()))
        return float(f[0] / np.linalg.norm(f))

    cos_ax, cos_by = cos_of({"A": 0.75, "X": 0.25}), cos_of({"B": 0.5, "Y": -0.75})
    assert cos_ax == pytest.approx(0.625 / math.sqrt(0.625 + 0.375 * (0.75 * 0.25 + a * x)))
    assert cos_by < -0.99
    for length in (1.0, 2.0):
        query = torch.tensor([[length, 0.0]], dtype=torch.float64)
        scores, idx = rr.rerank(query, gallery, torch.tensor([[0, 2, 1, 3]]), settings, kinds=["car"], k=4)
        expected = {"A": 0.75 * length - 1 + cos_ax, "X": 0.25 * length - 1 + cos_ax,
                    "B": 0.5 * length - 1 + cos_by, "Y": -0.75 * length - 1 + cos_by}
        assert [list(pts)[i] for i in idx[0].tolist()] == list(expected)
        assert scores[0].tolist() == pytest.approx(list(expected.values()), abs=1e-6)
    assert scores[0, 0].item() == pytest.approx(0.5 + 0.6462, abs=1e-4)  # length 2: A at 1.5 - 1 + cos


def test_embedded_counts_reciprocity_with_the_query_outside_the_own_neighbourhood():
    """Embeddings need not have unit length. k = 1, query (1, 0), I = (0.5, 0.3), J = (0.4, 0.9): I's
    most similar candidate is J (0.47 > I.I = 0.34), not itself, so neither of n's sums counts
    anything for I; but the query's nearest is I (0.5 > 0.4) and no candidate is more similar to I
    than the query (0.34, 0.47 < 0.5): I is reciprocal with the query, n = 1, and f_I = J counts,
    cos = 0.4 / |J|. J has n = 0: cos 0."""
    gallery = torch.tensor([[0.5, 0.3], [0.4, 0.9]], dtype=torch.float64)
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    settings = how(depth=2, k=1, reciprocal="embedded")
    scores, idx = rr.rerank(query, gallery, torch.tensor([[0, 1]]), settings, kinds=["car"], k=2)
    assert idx.tolist() == [[0, 1]]
    assert scores[0].tolist() == pytest.approx([0.5 - 1 + 0.4 / math.sqrt(0.97), 0.4 - 1], abs=1e-6)


def test_embedded_neighbourhood_that_cancels_out_scores_cosine_zero():
    """Two images whose mirrors are each other, with opposite embeddings (1, 0) and (-1, 0); query
    (0.6, 0.8), k = 2, flip: both have s = max(0.6, -0.6) = 0.6 and the same two neighbours, whose
    s-weighted sum 0.6 (1, 0) + 0.6 (-1, 0) is the zero vector: no direction, cosine 0 (not 0 / 0, a
    NaN), score s - 1 = -0.4, the tie to the smaller gallery index."""
    gallery = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    settings = how(depth=2, k=2, flip=True, reciprocal="embedded")
    scores, idx = rr.rerank(torch.tensor([[0.6, 0.8]], dtype=torch.float64), gallery, torch.tensor([[1, 0]]),
                            settings, kinds=["car"], gallery_flip=gallery.flip(0), k=2)
    assert idx.tolist() == [[0, 1]]
    assert scores[0].tolist() == pytest.approx([-0.4, -0.4], abs=1e-7)


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


def test_adapted_query_whatever_the_texts_length():
    """The min-max scaled weights do not depend on the text's length (0 for the less similar image,
    1 for the more similar, here at 10 degrees), down to 1e-160 and up to 1e160."""
    text = torch.tensor(at(0))[None]
    top = torch.tensor(np.stack([at(10), at(22)]))[None]
    for length in (1e-160, 1e160):
        assert torch.allclose(rr.adapted_query(length * text, top)[0], torch.tensor(at(10)), atol=1e-9)


def test_adapted_query_is_the_top_image_when_the_text_gives_no_sign():
    """The more similar image U2 is orthogonal to the text U1 (similarity exactly 0, the other image's
    cos 100 < 0): the component is U2 itself, and the text, at 0, does not turn it round."""
    top = torch.tensor(np.stack([U2, at(100)]))[None]
    assert torch.equal(rr.adapted_query(torch.tensor(U1)[None], top)[0], torch.tensor(U2))


def test_a3r_in_float32_under_a_float64_default():
    """float32 embeddings give a float32 adapted query (the text's sign applied in the component's
    dtype), so A3R runs at dtype=float32, and its scores are float32 as documented, even where
    torch's default dtype is float64."""
    text = torch.tensor(at(0), dtype=torch.float32)[None]
    top = torch.tensor(np.stack([at(10), at(22)]), dtype=torch.float32)[None]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        adapted = rr.adapted_query(text, top)
        query, gallery, candidates = hand_case()
        scores, idx = rr.rerank(query.float(), gallery.float(), candidates, how(adapted_query=True),
                                kinds=["car"], k=5, dtype=torch.float32)
    finally:
        torch.set_default_dtype(default)
    assert adapted.dtype == torch.float32
    assert torch.allclose(adapted[0], torch.tensor(at(10), dtype=torch.float32), atol=1e-6)
    assert idx.shape == (1, 5) and scores.dtype == torch.float32


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
    message = "A3R with flip needs the mirrored gallery's embeddings (gallery_flip)"
    with pytest.raises(rr.RerankError, match=f"^{re.escape(message)}$"):
        rr.rerank(query, gallery, candidates, how(flip=True), kinds=["car"], k=5)


def test_refusals_name_the_counts_and_the_cause():
    query, gallery, candidates = hand_case()
    two, both = torch.cat([query, query]), torch.cat([candidates, candidates])
    for kinds, cand, message in ((["car"], both, "2 queries, 2 candidate rows, 1 kinds"),
                                 (["car", "car"], candidates, "2 queries, 1 candidate rows, 2 kinds")):
        with pytest.raises(rr.RerankError, match=f"^{message}$"):
            rr.rerank(two, gallery, cand, how(), kinds=kinds, k=5)
    bad = query.clone()
    bad[0, 0] = float("nan")
    message = "re-ranking produced NaN scores: check the embeddings (all finite, non-zero?)"
    with pytest.raises(rr.RerankError, match=f"^{re.escape(message)}$"):
        rr.rerank(bad, gallery, candidates, how("none"), kinds=["car"], k=5)


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


def test_ties_go_to_the_smaller_gallery_index_among_many_candidates():
    """40 candidates, two embeddings taking turns (even rows u, odd rows v, the query nearer u), given
    in reverse gallery order: every even row ties, then every odd row, each group by gallery index."""
    u, v = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    gallery = torch.stack([u if i % 2 == 0 else v for i in range(40)])
    query = F.normalize(u + 0.5 * v, dim=0)[None]
    candidates = torch.arange(39, -1, -1)[None]
    for method in ("none", "aqe"):
        scores, idx = rr.rerank(query, gallery, candidates, how(method, depth=40, m=3), kinds=["car"], k=40)
        assert idx[0].tolist() == list(range(0, 40, 2)) + list(range(1, 40, 2)), method
        assert (scores[0, :20] == scores[0, 0]).all() and (scores[0, 20:] == scores[0, 20]).all()


def test_none_keeps_ten_by_default_from_only_as_many_candidates():
    """Method none re-ranks nothing: it needs only the k candidates it keeps (10 unless told), whatever
    depth the settings name for the other methods."""
    data = embeddings(3, 40, 8, seed=8)
    scores, cand = topk(data["query"], data["gallery"], k=10)
    kept, idx = rr.rerank(data["query"], data["gallery"], cand, how("none", depth=25), kinds=["car"] * 3)
    assert torch.equal(idx, cand) and torch.allclose(kept, scores, atol=1e-6)


def test_knn_mask_keeps_k_with_ties_to_the_smaller_column():
    sims = torch.tensor([[3.0, 2.0, 2.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 5.0, 2.0]])
    assert rr.knn_mask(sims, 2).tolist() == [[True, True, False, False], [True, True, False, False],
                                             [False, True, True, False]]
    assert rr.knn_mask(sims[None], 3)[0].sum(-1).tolist() == [3, 3, 3]


def test_alpha_query_expansion_by_hand():
    """Query (1, 0), alpha = 1, candidates A (1, 0), B (0.6, 0.8), C (0.6, -0.8) (s = 1, 0.6, 0.6).
    m = 3 (d = 2 < m: m counts images) takes all three: q + A + 0.6 B + 0.6 C = (2.72, 0), along the
    query, so the scores are s: A 1, then B and C tied at 0.6 (gallery order). With m = 2 (A and B):
    q + A + 0.6 B = (2.36, 0.48), over its length sqrt(5.8): A 2.36, B 1.8, C 1.032."""
    gallery = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]], dtype=torch.float64)
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    for m, expected in ((3, [1.0, 0.6, 0.6]), (2, [x / math.sqrt(5.8) for x in (2.36, 1.8, 1.032)])):
        settings = how("aqe", depth=3, m=m, alpha=1.0)
        scores, idx = rr.rerank(query, gallery, torch.tensor([[0, 1, 2]]), settings, kinds=["car"], k=3)
        assert idx.tolist() == [[0, 1, 2]]
        assert scores[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_no_queries_give_empty_results():
    _, gallery, _ = hand_case()
    no_candidates = torch.empty(0, 5, dtype=torch.long)
    scores, idx = rr.rerank(torch.empty(0, 3), gallery, no_candidates, how(), kinds=[], k=5)
    assert scores.shape == idx.shape == (0, 5)
    assert scores.dtype == torch.float32 and idx.dtype == torch.long


def test_re_ranking_warns_of_nothing():
    """Notebooks record every warning: the gathered candidates fill buffers already of their size."""
    data = embeddings(3, 30, 8, seed=9)
    _, cand = topk(data["query"], data["gallery"], k=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("a3r", "aqe", "kreciprocal"):
            rr.rerank(data["query"], data["gallery"], cand, how(method, depth=10, flip=True),
                      kinds=["car"] * 3, gallery_flip=data["mirror"], k=5)


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


@pytest.mark.parametrize("k2", [1, 2])
def test_k_reciprocal_even_k_expands_by_sets_of_half_k(k2):
    """k = 6 expands a set by each R(j, 3) (⌈6/2⌉) sharing more than 2/3 of itself with it: a set of
    at most 3 does so only when inside it, so nothing is added, and the encodings are those of the
    plain k-reciprocal sets. Unit vectors in the plane (d = 2 < k: k counts candidates) at A 1, B 8,
    C 24, D 27, E 38, F 42, G 71, H 77 degrees, the text at 7. The 6 nearest of A-D: A-F; of E, F: B-G;
    of G, H: C-H. k-reciprocal sets: A {A,B,C,D}, B, C, D {A..F}, E, F {B..G}, G {E,F,G,H}, H {G,H};
    the text's: its 6 nearest, A-F. Sets of 4 would add E to A's set (R(C, 4) = {B,C,D,E}, 3 of its 4
    in A's) and lift A from sixth to fourth. k2 = 2: each encoding is averaged with its nearest's
    (A-B, C-D, E-F, G-H are each other's), the text's with B's (its nearest)."""
    angles = dict(zip("ABCDEFGH", (1, 8, 24, 27, 38, 42, 71, 77)))
    sets = {"A": "ABCD", "B": "ABCDEF", "C": "ABCDEF", "D": "ABCDEF", "E": "BCDEFG", "F": "BCDEFG",
            "G": "EFGH", "H": "GH"}
    nearest = dict(zip("ABCDEFGH", "BADCFEHG"))
    gallery = torch.tensor(np.stack([at_plane(a) for a in angles.values()]))
    query = torch.tensor(at_plane(7))[None]

    def encode(members: str, center: float) -> np.ndarray:
        v = np.array([math.exp(cosd(a - center) - 1) if n in members else 0.0 for n, a in angles.items()])
        return v / v.sum()

    v_img = {n: encode(members, angles[n]) for n, members in sets.items()}
    v_text = encode("ABCDEF", 7)
    if k2 == 2:
        v_text, v_img = (v_text + v_img["B"]) / 2, {n: (v + v_img[nearest[n]]) / 2 for n, v in v_img.items()}
    expected = {}
    for name, v in v_img.items():
        jaccard = 1 - np.minimum(v_text, v).sum() / np.maximum(v_text, v).sum()
        expected[name] = -(0.7 * jaccard + 0.3 * (1 - cosd(angles[name] - 7)))
    ranked = sorted(expected, key=lambda n: -expected[n])
    assert "".join(ranked) == {1: "BCDEFAGH", 2: "CDBAEFGH"}[k2]
    settings = how("kreciprocal", depth=8, k=6, k2=k2, lam=0.3)
    scores, idx = rr.rerank(query, gallery, torch.tensor([[1, 0, 2, 3, 4, 5, 6, 7]]), settings,
                            kinds=["person"], k=8)
    assert "".join("ABCDEFGH"[i] for i in idx[0].tolist()) == "".join(ranked)
    assert scores[0].tolist() == pytest.approx([expected[n] for n in ranked], abs=1e-6)


def test_k_reciprocal_encoding_at_the_ends_of_the_float_range():
    """The encoding exp(s - 1) / sum exp(s - 1) over a set holds from the smallest similarity whose
    exp(s - 1) float64 still represents to the largest: here images of length sqrt(709.5) (each
    709.5 with itself, 0 with the others) and a text at -743.6, -800, -900 from A, B, C. k = 1: each
    image's set is itself, the text's its nearest, A; Jaccard distance 0 for A, 1 for B and C; score
    -(0.7 jaccard + 0.3 (1 - text similarity))."""
    length = math.sqrt(709.5)
    gallery = length * torch.eye(3, dtype=torch.float64)
    query = -torch.tensor([[743.6, 800.0, 900.0]], dtype=torch.float64) / length
    settings = how("kreciprocal", depth=3, k=1, k2=1, lam=0.3)
    scores, idx = rr.rerank(query, gallery, torch.tensor([[0, 1, 2]]), settings, kinds=["car"], k=3)
    assert idx.tolist() == [[0, 1, 2]]
    assert scores[0].tolist() == pytest.approx([-0.3 * 744.6, -0.7 - 0.3 * 801, -0.7 - 0.3 * 901])


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


def test_settings_carry_every_knob():
    """Every field is its Config key's value: the defaults, then every key changed."""
    assert rr.settings(config.Config()) == rr.Rerank(
        method="none", depth_car=25, depth_person=50, m=10, k=10, flip=True, adapted_query=True,
        reciprocal="embedded", alpha=3.0, lam=0.3, k2=6)
    cfg = config.Config(rerank="kreciprocal", rerank_depth_car=12, rerank_depth_person=14, rerank_m=3,
                        rerank_k=4, a3r_flip=False, a3r_adapted_query=False, a3r_reciprocal="none",
                        aqe_alpha=1.5, kreciprocal_lambda=0.6, kreciprocal_k2=2)
    assert rr.settings(cfg) == rr.Rerank(
        method="kreciprocal", depth_car=12, depth_person=14, m=3, k=4, flip=False, adapted_query=False,
        reciprocal="none", alpha=1.5, lam=0.6, k2=2)


@pytest.mark.parametrize("seed", [2, 4])  # the component lands on the text's side (2) or opposite it (4)
def test_an_adapted_query_from_near_identical_top_images_is_never_longer_than_a_unit_vector(seed):
    """Three top images equal up to ~4e-13 per coordinate: the centred, weighted images leave a principal
    component 0.6e-12 to 0.9e-12 long, below F.normalize's 1e-12 floor, so the query comes out shorter
    than a unit vector (it is divided by 1e-12, not by its length). Turned to the text's side, whichever
    side eigh returned, it must not grow: a similarity of the query stays within [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.full((1, 3, 4), 0.5, dtype=torch.float64)
    images = images + torch.randn(1, 3, 4, generator=generator, dtype=torch.float64) * 4e-13
    text = F.normalize(torch.randn(1, 4, generator=generator, dtype=torch.float64), dim=1)
    query = rr.adapted_query(text, images)
    assert 0.5 < float(query.norm()) < 0.95 and float((query * text).sum()) > 0  # 0.78 and 0.84
