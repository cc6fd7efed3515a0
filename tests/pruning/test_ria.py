"""RIA (Zhang et al., ICLR 2024) as a registered score: the formula on a hand-computed case, and every pattern."""

import pytest
import torch

from lib.pruning.driver import PruneConfig, prune_model
from lib.pruning.masks import ria_score
from lib.pruning.methods import PATTERNS
from tests.helpers import make_llama


def test_ria_matches_the_paper_formula_by_hand():
    weight = torch.tensor([[1.0, -2.0], [3.0, 4.0]])
    act_norm_sq = torch.tensor([16.0, 1.0])  # ||X|| = 4, 1; ||X||^0.5 = 2, 1
    # row sums 3, 7; column sums 4, 6
    expected = torch.tensor([[(1 / 3 + 1 / 4) * 2, (2 / 3 + 2 / 6) * 1], [(3 / 7 + 3 / 4) * 2, (4 / 7 + 4 / 6) * 1]])
    assert torch.allclose(ria_score(weight, act_norm_sq), expected)
    # alpha = 1 or a missing square root would give 4 and 16 as column factors instead of 2 and 1
    assert not torch.allclose(ria_score(weight, act_norm_sq, alpha=1.0), expected)
    # Wanda (|W| * ||X||: 4, 2, 12, 4) ties (0, 0) with (1, 1); RIA ranks (0, 0) below (1, 1)
    assert ria_score(weight, act_norm_sq).flatten().argsort().tolist() == [1, 0, 3, 2]


def test_an_all_zero_row_scores_zero_not_nan():
    weight = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    score = ria_score(weight, torch.ones(2))
    assert torch.isfinite(score).all() and (score[0] == 0).all()


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_ria_prunes_with_every_pattern(pattern):
    model = make_llama()
    samples = [torch.randint(4, 400, (1, 16), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    result = prune_model(model, samples, PruneConfig(prune_method="ria", sparsity_type=pattern), progress=False)
    assert len(result.matrices) == 14
    assert all(0.3 < record["sparsity"] < 0.6 for record in result.matrices)
