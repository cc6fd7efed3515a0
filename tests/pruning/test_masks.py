"""Mask math: exact tier counts, valid 2:4 groups, exact top-k, hand-worked rankings."""

import pytest
import torch

from lib.pruning.masks import (assign_tiers, block_mean_scores, nm_keep, three_tier_keep, three_tier_mask, tier_counts,
                               tier_histogram, unstructured_keep, wanda_score)
from lib.tiered.tier_map import DENSE, NM, TOPK
from tests.helpers import check_structure


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((64, 64), (5, 7, 4)),  # 16 blocks
        ((37, 50), (4, 5, 3)),  # 3 x 4 = 12 blocks, partial edges, width not a multiple of 4
        ((100, 90), (14, 18, 10)),  # 7 x 6 = 42 blocks
        ((16, 16), (0, 0, 1)),
    ],
)
def test_exact_tier_counts_and_structure(shape, expected):
    torch.manual_seed(0)
    weight = torch.randn(shape)
    act = torch.rand(shape[1]) + 0.1
    keep, tier_map = three_tier_mask(weight, act, (0.35, 0.45, 0.2), 16, 15)
    assert tier_map.dtype == torch.uint8
    assert tier_map.shape == (-(-shape[0] // 16), -(-shape[1] // 16))
    assert tuple(tier_histogram(tier_map).values()) == expected
    check_structure(keep, tier_map, 16, 15)


def test_partial_block_ranked_by_mean_not_sum():
    # block 0: 16x16 of 1.0 (sum 256, mean 1); block 1: 16x4 of 2.0 (sum 128, mean 2)
    weight = torch.cat([torch.ones(16, 16), 2 * torch.ones(16, 4)], dim=1)
    scores = block_mean_scores(weight, 16)
    assert torch.allclose(scores, torch.tensor([[1.0, 2.0]]))
    _, tier_map = three_tier_mask(weight, None, (0.5, 0.5, 0.0), 16, 15)
    assert tier_map.tolist() == [[NM, DENSE]]


def test_wanda_score_uses_square_root_of_norms():
    weight = torch.tensor([[1.0, 3.0]])
    act_norm_sq = torch.tensor([4.0, 1.0])  # norms 2 and 1 -> scores 2 and 3 (squared norms would give 4 and 3)
    assert torch.equal(wanda_score(weight, act_norm_sq), torch.tensor([[2.0, 3.0]]))
    assert unstructured_keep(wanda_score(weight, act_norm_sq), 0.5).tolist() == [[False, True]]


def test_rank_ties_deterministic_and_exact():
    # all blocks equal: the lowest block indices win, counts stay exact
    tier_map = assign_tiers(torch.zeros(2, 3), (2, 3, 1))
    assert tier_map.flatten().tolist() == [DENSE, DENSE, NM, NM, NM, TOPK]


def test_topk_exact_with_ties():
    score = torch.ones(32, 40)  # every weight tied
    keep = three_tier_keep(score, torch.full((2, 3), TOPK, dtype=torch.uint8), 16, 15)
    for r in range(2):
        for c in range(3):
            block = keep[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
            assert block.sum() == 15
    small = three_tier_keep(torch.ones(3, 3), torch.tensor([[TOPK]], dtype=torch.uint8), 16, 15)  # 9 < k elements: all kept
    assert small.all()


def test_nm_keep_hand_worked_with_ties_and_remainder():
    score = torch.tensor([[4.0, 1.0, 3.0, 2.0, 5.0, 5.0, 5.0, 0.0, 7.0, 6.0]])
    keep = nm_keep(score, 2, 4)
    # group 1 keeps 4, 3; group 2 has a 3-way tie -> lower indices 4, 5; remainder group of 2 keeps both
    assert keep.int().tolist() == [[1, 0, 1, 0, 1, 1, 0, 0, 1, 1]]
    assert nm_keep(score, 4, 8).sum() == 4 + 2


def test_intra_block_score_changes_choice():
    weight = torch.tensor([[1.0, 3.0, 2.0, 0.5] * 4] * 16)
    act = torch.tensor([9.0, 1.0, 1.0, 100.0] * 4)  # norms 3, 1, 1, 10 -> wanda 3, 3, 2, 5
    keep_w, tiers = three_tier_mask(weight, act, (0.0, 1.0, 0.0), 16, 15, "wanda")
    keep_m, _ = three_tier_mask(weight, act, (0.0, 1.0, 0.0), 16, 15, "magnitude")
    assert tiers.tolist() == [[NM]]
    assert keep_w[0, :4].int().tolist() == [1, 0, 0, 1]  # tie 3 vs 3 -> lower index
    assert keep_m[0, :4].int().tolist() == [0, 1, 1, 0]


def test_same_input_same_mask():
    torch.manual_seed(1)
    weight, act = torch.randn(48, 80), torch.rand(80)
    a = three_tier_mask(weight, act)
    b = three_tier_mask(weight.clone(), act.clone())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_overall_sparsity_matches_published_figure_on_full_blocks():
    torch.manual_seed(0)
    keep, _ = three_tier_mask(torch.randn(576, 1536), torch.rand(1536))
    # 0.45 * 0.5 + 0.2 * (1 - 15/256) = 0.41328 (published: 41.31%), up to floor rounding
    assert abs((1 - keep.float().mean().item()) - 0.41328) < 2e-4


def test_three_tier_keep_accepts_explicit_tier_map():
    score = torch.arange(16 * 32, dtype=torch.float32).view(16, 32)
    keep = three_tier_keep(score, torch.tensor([[TOPK, DENSE]], dtype=torch.uint8), 16, 3)
    assert keep[:, 16:].all() and keep[:, :16].sum() == 3
    assert keep[15, 13:16].all()  # the three largest scores of the top-k block


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ratios": (0.5, 0.5, 0.5)}, "sum to 1"),
        ({"ratios": (-0.1, 0.6, 0.5)}, ">= 0"),
        ({"ratios": (0.5, 0.5)}, "3 values"),
        ({"block_size": 10}, "multiple of 4"),
        ({"block_size": 0}, "multiple of 4"),
        ({"intra_block_score": "l2"}, "intra_block_score"),
        ({"topk_per_block": -1}, "topk_per_block"),
    ],
)
def test_bad_settings_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        three_tier_mask(torch.randn(16, 16), torch.rand(16), **kwargs)


def test_tier_counts_floor_is_robust_to_float_error():
    assert tier_counts(100, (0.29, 0.42, 0.29)) == (29, 42, 29)
    assert tier_counts(10, (0.7, 0.3, 0.0)) == (7, 3, 0)


def test_row_balanced_tiers_hand_worked():
    from lib.pruning.masks import assign_tiers_row_balanced

    scores = torch.tensor([[9.0, 8, 7, 6], [1, 2, 3, 4], [5, 0, 0, 0]])
    # round-robin over rows: every row's best block first (dense), then every row's second best (2:4)
    assert assign_tiers_row_balanced(scores, (3, 3, 6)).tolist() == [[0, 1, 2, 2], [2, 2, 1, 0], [0, 1, 2, 2]]
    # plain ranking would give row 1 no dense block and row 0 three
    assert assign_tiers(scores, (3, 3, 6)).tolist() == [[0, 0, 0, 1], [2, 2, 2, 1], [1, 2, 2, 2]]


@pytest.mark.parametrize("shape", [(64, 64), (100, 90), (37, 50)])
def test_row_balanced_counts_exact_and_even(shape):
    from lib.pruning.masks import assign_tiers_row_balanced

    torch.manual_seed(0)
    scores = block_mean_scores(torch.rand(shape), 16)
    counts = tier_counts(scores.numel(), (0.35, 0.45, 0.2))
    tiers = assign_tiers_row_balanced(scores, counts)
    assert tuple((tiers == t).sum().item() for t in range(3)) == counts
    dense_per_row = (tiers == DENSE).sum(1)
    assert dense_per_row.max() - dense_per_row.min() <= 1
    for r in range(tiers.shape[0]):  # a row's dense blocks are its best blocks
        row_dense, row_rest = scores[r][tiers[r] == DENSE], scores[r][tiers[r] != DENSE]
        if row_dense.numel() and row_rest.numel():
            assert row_dense.min() >= row_rest.max()
