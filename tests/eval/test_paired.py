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
