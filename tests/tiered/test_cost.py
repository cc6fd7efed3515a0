"""The cost model's Pareto frontier (lib/tiered/cost.py)."""

import pytest

from lib.tiered.cost import established_front, pareto_front


def test_pareto_front_by_hand():
    # (cost, ppl): (1, 30) cheapest; (2, 10) best; (3, 20) is beaten by (2, 10); (1, 30) twice: neither dominates the other
    assert pareto_front([1, 2, 3, 1], [30, 10, 20, 30]) == [True, True, False, True]
    # a point 0.01% cheaper but worse is beaten by its near-twin; at 1% cheaper it stays
    assert pareto_front([1000, 1000.1], [100, 60]) == [False, True]
    assert pareto_front([1000, 1010], [100, 60]) == [True, True]


def test_established_front_removes_only_established_dominations():
    # (cost, per-seed PPL): a cheap clear winner, a costlier clearly worse point, a costlier point whose lead
    # over the winner is within the seed spread, and a seed-independent point (one value, e.g. dense)
    costs = [300, 340, 340, 500]
    samples = [[50.0, 50.5, 51.0], [80.0, 80.4, 80.8], [49.0, 55.0, 61.0], [30.0]]
    front, verdicts = established_front(costs, samples)
    assert front == [True, False, True, True]
    by_pair = {(v["better"], v["worse"]): v for v in verdicts}
    assert set(by_pair) == {(0, 1), (0, 2), (2, 1)}  # only no-costlier points with a lower mean are candidates
    assert by_pair[(0, 1)]["established"] and not by_pair[(0, 2)]["established"]
    assert by_pair[(0, 1)]["p_holm"] == pytest.approx(3 * by_pair[(0, 1)]["p"])  # Holm over the 3 candidates
    # with one seed per point there is no test: nothing is removed (pareto_front compares the values instead)
    assert established_front([1, 2], [[10.0], [20.0]])[0] == [True, True]
    # a single value is exact: three seeds all above it by a clear margin are established as worse
    front, verdicts = established_front([100, 100], [[30.0], [40.0, 40.2, 40.4]])
    assert front == [True, False] and verdicts[0]["established"]
