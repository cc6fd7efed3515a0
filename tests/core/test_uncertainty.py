"""lib/core/uncertainty.py against values worked by hand on fixed per-example lists."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from lib.core.uncertainty import (Z_95, difference_test, holm_adjust, mean_sd, mean_stderr, paired_bootstrap, ppl_interval,
                                  student_t_two_sided_p, welch_t)


def test_mean_stderr_is_the_ddof1_standard_error():
    # [1, 2, 3, 4]: mean 2.5, squared deviations 5, variance 5/3 (ddof 1), se sqrt(5/3) / 2
    assert mean_stderr([1, 2, 3, 4]) == pytest.approx(math.sqrt(5 / 3) / 2)
    # 0/1 accuracies, 4 of 8 right: variance 8/7 * 0.25 (ddof 1), se sqrt(2/7 / 8); ddof 0 would give 0.1768
    assert mean_stderr([1, 0, 0, 0, 1, 1, 0, 1]) == pytest.approx(0.1889822, abs=1e-7)
    assert mean_stderr([0.5, 0.5, 0.5]) == 0.0
    assert mean_stderr([1.0]) is None and mean_stderr([]) is None


def test_weighted_stderr_by_hand():
    # token-weighted NLL: x = [1, 3] with 1 and 3 tokens: mean 2.5; se = sqrt(2 * ((1 * -1.5)^2 + (3 * 0.5)^2)) / 4
    assert mean_stderr([1, 3], [1, 3]) == pytest.approx(0.75)
    assert mean_stderr([1, 2, 3, 4], [2, 2, 2, 2]) == pytest.approx(mean_stderr([1, 2, 3, 4]))  # equal weights
    with pytest.raises(ValueError, match="positive"):
        mean_stderr([1, 2], [1, 0])


def test_ppl_interval_by_hand():
    # window NLLs [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3)
    low, high = ppl_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(math.exp(2 - 1.959964 / math.sqrt(3)))
    assert high == pytest.approx(math.exp(2 + 1.959964 / math.sqrt(3)))
    assert low < math.exp(2) < high
    assert ppl_interval([2.0]) is None
    assert Z_95 == pytest.approx(1.959964, abs=1e-6)


def test_student_t_p_values_match_tables():
    for t, df in ((12.7062, 1), (4.302653, 2), (2.776445, 4), (2.228139, 10)):  # two-sided 5% critical values
        assert student_t_two_sided_p(t, df) == pytest.approx(0.05, abs=1e-6)
    assert student_t_two_sided_p(0.0, 3) == pytest.approx(1.0)
    assert student_t_two_sided_p(1.959964, 1e7) == pytest.approx(0.05, abs=1e-5)  # the normal limit


def test_welch_t_by_hand():
    # [1, 2, 3] vs [4, 5, 6]: difference -3, variances 1, se sqrt(2/3), t -3.674, Welch df exactly 4
    result = welch_t([1, 2, 3], [4, 5, 6])
    assert result["difference"] == -3
    assert result["t"] == pytest.approx(-3 / math.sqrt(2 / 3))
    assert result["df"] == pytest.approx(4.0)
    assert result["p"] == pytest.approx(0.02131, abs=1e-4)
    unequal = welch_t([758.4, 625.2, 601.5], [599.85, 650.0, 560.0])  # a seed spread covers the difference
    assert unequal["p"] > 0.3
    assert welch_t([1.0], [2.0, 3.0])["p"] is None
    assert mean_sd([1, 2, 3]) == (2.0, 1.0) and mean_sd([5]) == (5.0, None)


def reports(values_a, values_b):
    return [{str(i): v for i, v in enumerate(values_a)}], [{str(i): v for i, v in enumerate(values_b)}]


def test_bootstrap_marks_a_clear_difference_and_not_a_noise_one():
    rng = np.random.default_rng(1)
    base = rng.random(400) < 0.4
    better = base | (rng.random(400) < 0.3)  # same examples plus ~18 points: clearly significant
    clear = paired_bootstrap(*reports(better.astype(float), base.astype(float)), seed=0)
    assert clear["significant"] and 0 < clear["low"] < clear["difference"] < clear["high"]
    assert clear["difference"] == pytest.approx(better.mean() - base.mean())
    flipped = base.copy()
    flipped[:4] = ~flipped[:4]  # 4 of 400 answers changed: not established
    noise = paired_bootstrap(*reports(flipped.astype(float), base.astype(float)), seed=0)
    assert not noise["significant"] and noise["low"] <= 0 <= noise["high"]
    assert noise == paired_bootstrap(*reports(flipped.astype(float), base.astype(float)), seed=0)  # seeded


def test_bootstrap_pairs_by_id_and_is_tighter_than_unpaired():
    rng = np.random.default_rng(2)
    hard = rng.normal(0, 3, 300)  # a per-example difficulty shared by both models
    a = {str(i): h + 0.3 for i, h in enumerate(hard)}
    b = {str(i): h for i, h in enumerate(hard)}
    b_shuffled = dict(reversed(list(b.items())))  # order does not matter, ids do
    paired = paired_bootstrap([a], [b_shuffled])
    assert paired["difference"] == pytest.approx(0.3) and paired["high"] - paired["low"] < 1e-9
    assert paired["significant"]  # the unpaired se (~0.25) would not exclude 0 at 0.3


def test_bootstrap_perplexity_transform_weights_and_seeds():
    nll_a, nll_b = {"0": 1.0, "1": 2.0, "2": 3.0}, {"0": 1.0, "1": 1.0, "2": 1.0}
    result = paired_bootstrap([nll_a], [nll_b], transform=np.exp)
    assert result["difference"] == pytest.approx(math.exp(2) - math.exp(1))
    weighted = paired_bootstrap([{"a": 1.0, "b": 3.0}], [{"a": 0.0, "b": 0.0}], weights={"a": 1, "b": 3})
    assert weighted["difference"] == pytest.approx(2.5)  # token-weighted mean
    seeds = paired_bootstrap([{"0": 1.0, "1": 1.0}, {"0": 3.0, "1": 3.0}], [{"0": 0.0, "1": 0.0}])
    assert seeds["difference"] == pytest.approx(2.0)  # mean over seeds
    assert seeds["low"] == pytest.approx(1.0) and seeds["high"] == pytest.approx(3.0)  # seed resampling shows


def test_bootstrap_refuses_disjoint_reports_and_warns_on_small_overlap(caplog):
    with pytest.raises(ValueError, match="share no example ids"):
        paired_bootstrap([{"a": 1.0}], [{"b": 1.0}])
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap([{"a": 1.0}], [{"a": 1.0}], n_resamples=100)
    with caplog.at_level(logging.WARNING):
        result = paired_bootstrap(*reports([1.0] * 30, [0.0] * 30))
    assert result["n"] == 30 and not caplog.records
    with caplog.at_level(logging.WARNING):
        result = paired_bootstrap([{str(i): 1.0 for i in range(30)}], [{str(i): 0.0 for i in range(5)}])
    assert result["n"] == 5 and "only 5 shared examples" in caplog.text


def test_holm_adjust_by_hand():
    # sorted 0.01, 0.03, 0.04 of m = 3: 3 * 0.01 = 0.03; 2 * 0.03 = 0.06; max(0.06, 1 * 0.04) = 0.06
    adjusted = holm_adjust([0.04, 0.01, None, 0.03])
    assert adjusted[2] is None and adjusted[0] == pytest.approx(0.06) and adjusted[1] == pytest.approx(0.03)
    assert adjusted[3] == pytest.approx(0.06)
    assert holm_adjust([0.5, 0.9]) == [1.0, 1.0]  # capped at 1, never below an earlier step
    assert holm_adjust([0.02]) == [0.02] and holm_adjust([]) == []


def test_difference_test_takes_a_single_value_as_exact():
    assert difference_test([1, 2, 3], [4, 5, 6]) == welch_t([1, 2, 3], [4, 5, 6])
    # [4, 5, 6] against the exact value 1: t = (5 - 1) / (1 / sqrt 3), df 2, either side
    one = difference_test([1.0], [4, 5, 6])
    assert one["difference"] == -4 and one["t"] == pytest.approx(-4 * math.sqrt(3)) and one["df"] == 2
    assert one["p"] == pytest.approx(student_t_two_sided_p(4 * math.sqrt(3), 2))
    assert difference_test([4, 5, 6], [1.0])["t"] == pytest.approx(4 * math.sqrt(3))
    assert difference_test([1.0], [2.0])["p"] is None and difference_test([2.0, 2.0], [1.0])["p"] is None
