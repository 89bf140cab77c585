"""lib.eval.paired: the paired bootstrap says noise where there is noise, and a change where there is one."""
import numpy as np
import pytest

from lib.eval.paired import paired_difference


def test_a_real_gain_has_an_interval_above_zero():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 800)
    b = np.clip(a + 0.05 + rng.normal(0, 0.05, 800), 0, None)
    d = paired_difference(a, b)
    assert d.delta == pytest.approx((b - a).mean()) and d.low > 0 and not d.is_noise
    assert d.low < d.delta < d.high and d.queries == 800
    assert str(d).startswith("+0.0")


def test_noise_straddles_zero_and_pairing_matters():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 400)
    b = a + rng.normal(0, 0.1, 400)  # the same queries, small noise: paired, tight around zero
    assert paired_difference(a, b).is_noise
    assert paired_difference(a, b).high - paired_difference(a, b).low < 0.03
    assert paired_difference(a, a).delta == 0.0 and paired_difference(a, a).low == 0.0


def test_refuses_unpaired_arrays():
    with pytest.raises(ValueError, match="equally long"):
        paired_difference(np.zeros(3), np.zeros(4))


def test_the_spread_between_seeds_enters_the_interval():
    """Three seeds whose changes are +0.1, +0.1 and -0.2 on every query: their mean is 0, and the
    query-only bootstrap of seed-averaged APs would call it exactly 0 ([0, 0]). Resampling the
    seeds gives the mean of k rows of -0.2 and 3 - k of +0.1, k ~ Binomial(3, 1/3): -0.2 with
    probability 1/27 (> 2.5 %) and +0.1 with 8/27, so the 95 % interval is [-0.2, +0.1]."""
    a = np.zeros((3, 50))
    b = np.array([[0.1] * 50, [0.1] * 50, [-0.2] * 50])
    d = paired_difference(a, b)
    assert d.delta == pytest.approx(0.0, abs=1e-12) and d.seeds == 3 and d.queries == 50
    assert (d.low, d.high) == (pytest.approx(-0.2), pytest.approx(0.1)) and d.is_noise
    flat = paired_difference(a.mean(axis=0), b.mean(axis=0))
    assert flat.high - flat.low == pytest.approx(0.0, abs=1e-12)  # what the seed-averaged bootstrap says


def test_constant_changes_have_no_spread_and_one_row_faces_every_seed():
    a, b = np.zeros((1, 20)), np.full((4, 20), 0.05)  # the zero-shot model against four seeds
    d = paired_difference(a, b)
    assert (d.delta, d.low, d.high, d.se, d.seeds) == (pytest.approx(0.05), pytest.approx(0.05),
                                                       pytest.approx(0.05), pytest.approx(0.0), 4)
    with pytest.raises(ValueError, match="paired seeds: 2 against 3"):
        paired_difference(np.zeros((2, 5)), np.zeros((3, 5)))


def test_one_model_each_is_the_query_bootstrap_and_the_mde_is_2_8_standard_errors():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 1, 300), rng.uniform(0, 1, 300)
    d = paired_difference(a, b)
    picks = np.random.default_rng(0).integers(0, 300, size=(2000, 300))  # the queries, seed 0
    means = (b - a)[picks].mean(axis=1)
    assert (d.low, d.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])), abs=1e-12)
    assert d.se == pytest.approx(means.std(ddof=1)) and d.mde == pytest.approx(2.8 * d.se)


def test_aps_read_as_text_and_recall_hits_as_bools_are_taken_as_numbers():
    """APs from a CSV read by the csv module are strings, recall hits are bools: both become float64
    (numpy would refuse str - float, and bool - bool). A constant change of +0.25 on every query: the
    interval is [+0.25, +0.25], over one model a side (seeds 1)."""
    d = paired_difference(["0.25", "0.5"], ["0.5", "0.75"])
    assert (d.delta, d.low, d.high, d.queries, d.seeds) == (0.25, 0.25, 0.25, 2, 1)
    hits = paired_difference(np.array([True, False, False, True]), np.array([True, True, False, True]))
    assert (hits.delta, hits.queries, hits.seeds) == (0.25, 4, 1)


def test_a_zero_shot_side_faces_every_seed_either_way_round():
    """A 1-d (zero-shot) side against seeds x queries is paired with every seed, as a one-row side
    is; and so is a one-row b against several seeds of a. The change is mean(b) - mean(a)."""
    zero_shot = np.array([0.2, 0.4, 0.6])
    tuned = zero_shot + np.array([[0.1], [0.1]])  # two seeds, +0.1 on every query
    d = paired_difference(zero_shot, tuned)
    assert (d.delta, d.low, d.high) == (pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1))
    assert (d.seeds, d.queries) == (2, 3)
    seeds_a = np.array([[0.2, 0.4], [0.6, 0.8], [0.4, 0.6]])  # mean 0.5
    d = paired_difference(seeds_a, np.array([[0.6, 0.6]]))  # one row, mean 0.6
    assert (d.delta, d.seeds, d.queries) == (pytest.approx(0.1), 3, 2)
    assert d.low < d.delta < d.high  # the changes differ by seed and query: +0.4, +0.2, 0, -0.2, +0.2, 0


def test_one_seed_still_resamples_the_queries_and_the_seeded_result_repeats():
    """One seed x queries: the seed resampling is trivial, the query resampling is not. Its standard
    error is the 1-d bootstrap's, std(diff) / sqrt(n) for the plug-in bootstrap; and seed=0 by default
    makes it the same on every call."""
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0, 1, 200), rng.uniform(0, 1, 200)
    d = paired_difference(a[None], b[None])
    assert d.seeds == 1 and d.high - d.low > 0.05
    assert d.se == pytest.approx((b - a).std() / np.sqrt(200), rel=0.1)
    assert d.se == pytest.approx(paired_difference(a, b).se, rel=0.1)
    seeds_a, seeds_b = rng.uniform(0, 1, (3, 40)), rng.uniform(0, 1, (3, 40))
    first, again = paired_difference(seeds_a, seeds_b), paired_difference(seeds_a, seeds_b)
    assert (first.low, first.high, first.se) == (again.low, again.high, again.se)
    assert (first.low, first.high) != (paired_difference(seeds_a, seeds_b, seed=1).low,
                                       paired_difference(seeds_a, seeds_b, seed=1).high)


@pytest.mark.parametrize(("a_shape", "b_shape", "message"), [
    ((2, 3), (2, 4), "paired scores need seeds x queries arrays over the same queries, got (2, 3) "
                     "and (2, 4)"),
    ((2, 3, 3), (2, 3), "paired scores need seeds x queries arrays over the same queries, got (2, 3, 3) "
                        "and (2, 3)"),
    ((2, 1), (3, 1), "paired seeds: 2 against 3 (the same seeds, or one row)"),
    ((3,), (4,), "paired scores need two equally long 1-d arrays, got (3,) and (4,)"),
])
def test_the_refusals_name_both_shapes(a_shape, b_shape, message):
    with pytest.raises(ValueError) as refused:
        paired_difference(np.zeros(a_shape), np.zeros(b_shape))
    assert str(refused.value) == message
