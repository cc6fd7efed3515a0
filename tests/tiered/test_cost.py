"""The cost model's Pareto frontier (lib/tiered/cost.py)."""

from lib.tiered.cost import pareto_front


def test_pareto_front_by_hand():
    # (cost, ppl): (1, 30) cheapest; (2, 10) best; (3, 20) is beaten by (2, 10); (1, 30) twice: neither dominates the other
    assert pareto_front([1, 2, 3, 1], [30, 10, 20, 30]) == [True, True, False, True]
    # a point 0.01% cheaper but worse is beaten by its near-twin; at 1% cheaper it stays
    assert pareto_front([1000, 1000.1], [100, 60]) == [False, True]
    assert pareto_front([1000, 1010], [100, 60]) == [True, True]
