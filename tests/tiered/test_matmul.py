"""The reference hybrid matmul (lib/tiered/matmul.py) against the dense product of the decoded weight."""

import pytest
import torch

from lib.pruning.masks import three_tier_mask
from lib.tiered.format import decode_tiered, encode_tiered
from lib.tiered.matmul import tiered_matmul
from lib.tiered.tier_map import DENSE, NM, TOPK
from tests.helpers import default_model_weights


def check_against_dense(weight: torch.Tensor, ratios=(0.35, 0.45, 0.2), batch=(3,), max_elements=1 << 24):
    keep, tier_map = three_tier_mask(weight, None, ratios, 16, 15)
    pruned = weight * keep
    encoded = encode_tiered(pruned, tier_map, 16, 15)
    x = torch.randn(*batch, weight.shape[1], dtype=torch.float64).to(weight.dtype)
    y = tiered_matmul(x, encoded, tuple(weight.shape), 16, max_elements)
    expected = x.double() @ decode_tiered(encoded, tuple(weight.shape), 16).double().T
    assert y.shape == (*batch, weight.shape[0]) and y.dtype == weight.dtype
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    return tier_map


@pytest.mark.parametrize("shape", [(40, 88), (64, 64), (17, 36)])
def test_random_matrices_with_partial_tiles(shape):
    torch.manual_seed(0)
    tier_map = check_against_dense(torch.randn(*shape), batch=(2, 5))
    assert set(tier_map.flatten().tolist()) == {DENSE, NM, TOPK}


@pytest.mark.parametrize("ratios", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
def test_single_tier_matrices_and_tiny_chunks(ratios):
    torch.manual_seed(1)
    check_against_dense(torch.randn(48, 80), ratios, batch=(4,), max_elements=300)  # many chunks of a few tiles


@pytest.mark.real_model
def test_default_model_matrices():
    for weight in default_model_weights("model.layers.0.self_attn.k_proj.weight", "model.layers.3.mlp.down_proj.weight"):
        check_against_dense(weight, batch=(1,))
        check_against_dense(weight, batch=(64,))
