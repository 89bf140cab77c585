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
