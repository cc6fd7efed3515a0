"""OBS reconstruction under the three-tier structure on a single Linear layer."""

import torch

from lib.masks import assign_tiers, block_mean_scores, three_tier_keep, tier_counts, wanda_score
from lib.sparsegpt import sparsegpt_reconstruct
from lib.stats import ActNormStats, HessianStats
from test_masks import check_structure


def correlated_inputs(n, dim, seed=0):
    """Low-rank plus noise activations, as in LLMs: (N, I). With i.i.d. inputs OBS has nothing to exploit."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g) @ torch.randn(8, dim, generator=g) + 0.3 * torch.randn(n, dim, generator=g)


def test_hessian_diagonal_is_the_wanda_statistic():
    x = correlated_inputs(100, 24)
    h, a = HessianStats(24, x.device), ActNormStats(24, x.device)
    for chunk in x.split(30):
        h.add_batch(chunk.view(1, -1, 24))
        a.add_batch(chunk.view(1, -1, 24))
    assert torch.allclose(h.act_norm_sq, a.act_norm_sq, rtol=1e-5)
    assert torch.allclose(h.hessian, x.t() @ x, rtol=1e-4, atol=1e-3)


def test_obs_lowers_reconstruction_error_with_same_tier_structure():
    torch.manual_seed(0)
    weight = torch.randn(48, 64)
    x = correlated_inputs(512, 64)  # (N, I)
    hessian = x.t() @ x
    score = wanda_score(weight, hessian.diagonal())
    tier_map = assign_tiers(block_mean_scores(score, 16), tier_counts(12, (0.35, 0.45, 0.2)))

    mask_only = weight * three_tier_keep(score, tier_map, 16, 15)

    def select(saliency, first_column):
        return three_tier_keep(saliency, tier_map[:, first_column // 16 : first_column // 16 + 1], 16, 15)

    solved, keep = sparsegpt_reconstruct(weight, hessian, select, chunk=16, percdamp=0.01)
    check_structure(keep, tier_map, 16, 15)
    assert torch.equal(solved != 0, keep)
    reference = x @ weight.t()
    err_mask = (reference - x @ mask_only.t()).norm()
    err_obs = (reference - x @ solved.t()).norm()
    assert err_obs < 0.8 * err_mask, (err_obs, err_mask)


def test_nothing_pruned_leaves_weights_unchanged():
    weight = torch.randn(8, 16)
    x = correlated_inputs(64, 16)
    solved, keep = sparsegpt_reconstruct(weight, x.t() @ x, lambda s, c: torch.ones_like(s, dtype=torch.bool), chunk=4)
    assert keep.all() and torch.allclose(solved, weight, atol=1e-5)
