"""Budgeted tier assignment: the solver against exhaustive search, budgets, structure, flags and the CLI."""

import itertools
import json

import pytest
import torch

import main_block_three_tier as cli
from lib.pruning.budget import block_losses, matrix_budget, parse_tier_budget, tier_costs
from lib.pruning.driver import PruneConfig, prune_model
from lib.pruning.masks import assign_tiers, three_tier_keep, tier_counts
from lib.pruning.tier_solver import chosen, lagrangian_choice, solve_tiers
from lib.tiered.cost import tiered_cost
from lib.tiered.tier_map import DENSE, NM, TOPK, TierMetadata, load_tier_maps
from tests.helpers import SAMPLE_DATA, check_structure, make_llama

COSTS = tier_costs(16, 15, 4)  # float32 weights: 1025 / 545 / 76 bytes


def random_losses(g: int, b: int, seed: int) -> torch.Tensor:
    """[g, b, 3] losses: dense 0, 2:4 in [0, 1), top-k around it (sometimes below: a few large weights)."""
    gen = torch.Generator().manual_seed(seed)
    nm = torch.rand(g, b, generator=gen, dtype=torch.float64)
    topk = (nm + 3 * torch.rand(g, b, generator=gen, dtype=torch.float64) ** 2 - 0.3).clamp_min(0.01)
    return torch.stack([torch.zeros_like(nm), nm, topk], -1)


def test_tile_costs_are_the_formats():
    assert COSTS.tolist() == [1 + 256 * 4, 1 + 128 * 4 + 32, 1 + 15 * 5]
    tier_map = torch.tensor([[DENSE, NM], [TOPK, TOPK]], dtype=torch.uint8)
    assert tiered_cost(tier_map, 16, 15, 4)["bytes"] == COSTS[tier_map.long()].sum().item()


@pytest.mark.parametrize("fraction", [0.3, 0.7, 1.0, 1.4])
def test_budget_is_never_exceeded_and_hit_within_one_tile(fraction):
    loss = random_losses(50, 36, seed=1)
    budget = torch.full((50,), fraction * 36 * COSTS[NM].item())
    tiers = solve_tiers(loss, COSTS, budget).long()
    spent = COSTS[tiers].sum(-1)
    assert (spent <= budget).all()
    assert (budget - spent < COSTS[DENSE]).all()


def test_infeasible_budget_is_one_line():
    with pytest.raises(ValueError, match="below the 912 bytes of the cheapest tiers; raise --tier_budget"):
        solve_tiers(random_losses(1, 12, 0), COSTS, torch.tensor([900.0]))


def exhaustive(loss: torch.Tensor, budget: float) -> float:
    """The least total loss of any of the 3^12 assignments within the budget (loss [12, 3])."""
    every = torch.tensor(list(itertools.product(range(3), repeat=loss.shape[0])))  # (3^12, 12)
    fits = COSTS[every].sum(1) <= budget
    return loss[torch.arange(loss.shape[0]), every[fits]].sum(1).min().item()


@pytest.mark.parametrize("seed", range(8))
def test_matches_exhaustive_search_on_12_blocks(seed):
    loss = random_losses(1, 12, seed)
    for fraction in (0.5, 0.8, 1.0, 1.3):
        budget = fraction * 12 * COSTS[NM].item()
        tiers = solve_tiers(loss, COSTS, torch.tensor([budget]))[0].long()
        assert chosen(loss, tiers[None]).sum().item() == pytest.approx(exhaustive(loss[0], budget), abs=1e-12)


def test_lagrangian_choice_is_optimal_at_its_own_cost():
    loss = random_losses(1, 12, seed=11)
    for lam in (1e-4, 1e-3, 3e-3, 1e-2):
        tiers = lagrangian_choice(loss, COSTS.expand_as(loss), torch.tensor([lam], dtype=torch.float64))
        budget = COSTS[tiers].sum().item()
        assert chosen(loss, tiers).sum().item() == pytest.approx(exhaustive(loss[0], budget), abs=1e-12)


@pytest.mark.parametrize("n, ratios", [(12, (0.35, 0.45, 0.2)), (40, (0.2, 0.5, 0.3)), (96, (0.5, 0.4, 0.1))])
@pytest.mark.parametrize("value_bytes, k", [(4, 15), (2, 64)])
def test_constant_losses_give_back_the_fixed_shares(n, ratios, value_bytes, k):
    """Losses on the cost line (every full-budget choice ties) and the fixed shares' bytes as the budget: the tie
    rule returns the fixed-share map itself, its exact counts and positions."""
    costs = tier_costs(16, k, value_bytes)
    prior = assign_tiers(torch.rand(1, n, generator=torch.Generator().manual_seed(n)), tier_counts(n, ratios))
    loss = (0.01 * (costs[DENSE] - costs)).expand(1, n, 3).clone()
    tiers = solve_tiers(loss, costs, costs[prior.long()].sum().reshape(1), prior)
    assert torch.equal(tiers, prior)
    assert tuple(torch.bincount(tiers.flatten().long(), minlength=3).tolist()) == tier_counts(n, ratios)


def test_block_losses_are_what_each_keep_rule_drops():
    gen = torch.Generator().manual_seed(0)
    importance = torch.rand(20, 36, generator=gen)  # partial edge blocks on both sides
    losses = block_losses(importance, importance, 16, 15)
    assert losses.shape == (2, 3, 3) and (losses[..., DENSE] == 0).all()
    for tier in (NM, TOPK):
        tier_map = torch.full((2, 3), tier, dtype=torch.uint8)
        dropped = importance * ~three_tier_keep(importance, tier_map, 16, 15)
        assert losses[0, 0, tier].item() == pytest.approx(dropped[:16, :16].sum().item(), rel=1e-6)
        assert losses[1, 2, tier].item() == pytest.approx(dropped[16:, 32:].sum().item(), rel=1e-6)
    assert losses[..., TOPK].sum().item() == pytest.approx(importance.sum().item() - sum(
        importance[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16].flatten().topk(15).values.sum().item()
        for r in range(2) for c in range(3)), rel=1e-6)


@pytest.mark.parametrize("text, fraction", [("2:4", 1.0), ("0.9x2:4", 0.9), ("s=0.5", 1.0), ("s=0.6", 0.8)])
def test_budget_forms(text, fraction):
    assert parse_tier_budget(text) == pytest.approx(fraction)


def samples(n=6, length=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 400, (1, length), generator=gen) for _ in range(n)]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("scope", ["matrix", "row", "layer", "model"])
def test_budgeted_pruning_structure_and_budget_per_scope(method, scope):
    model = make_llama()
    config = PruneConfig(prune_method=method, tier_scope=scope, tier_assignment="budgeted", tier_budget="0.9x2:4",
                         profile_nsamples=None)
    result = prune_model(model, samples(), config, progress=False)
    spent, budget = 0, 0
    for path, tier_map in result.tier_maps.items():
        weight = model.get_submodule(path).weight
        check_structure(weight != 0, tier_map, 16, 15)  # 2 of every 4 in 2:4 tiles, exactly k in top-k tiles
        cost, allowed = tiered_cost(tier_map, 16, 15, 4)["bytes"], matrix_budget(tuple(weight.shape), config, 4)
        if scope == "matrix":
            assert allowed - COSTS[DENSE] < cost <= allowed, path
        if scope == "row":
            per_row = COSTS[tier_map.long()].sum(1)
            assert (per_row <= allowed / tier_map.shape[0]).all(), path
        spent, budget = spent + cost, budget + allowed
    assert budget - len(result.tier_maps) * COSTS[DENSE] < spent <= budget
    for i, shares in enumerate(result.layer_ratios):  # each layer's shares are what its maps hold
        codes = torch.cat([t.flatten() for p, t in result.tier_maps.items() if f".{i}." in p]).long()
        assert shares == pytest.approx((torch.bincount(codes, minlength=3) / codes.numel()).tolist())


def test_fixed_shares_unchanged_and_metadata():
    assert PruneConfig().tier_metadata("m").to_dict() == {
        "block_size": 16, "ratios": [0.35, 0.45, 0.2], "topk_per_block": 15, "tier_scope": "matrix", "owl": False,
        "model": "m"}
    budgeted = PruneConfig(tier_assignment="budgeted", tier_budget="2:4", tier_scope="row").tier_metadata("m")
    assert budgeted == TierMetadata(16, None, 15, "row", False, "m", "budgeted", "2:4")


@pytest.mark.parametrize("kwargs, message", [
    (dict(tier_assignment="budgeted"), "--tier_assignment budgeted needs --tier_budget"),
    (dict(tier_budget="2:4"), "--tier_budget applies to --tier_assignment budgeted only"),
    (dict(tier_assignment="budgeted", tier_budget="2:4", sparsity_type="2:4"), "--tier_assignment budgeted applies to"),
    (dict(tier_assignment="budgeted", tier_budget="2:4", owl=True), "--owl shifts fixed tier shares"),
    (dict(tier_assignment="budgeted", tier_budget="half"), "--tier_budget 'half' is not 2:4, a fraction"),
    (dict(tier_assignment="budgeted", tier_budget="2:4", ratios=(0.5, 0.3, 0.2)), "--sparsity_ratios are fixed"),
    (dict(tier_assignment="greedy"), "--tier_assignment 'greedy' is not one of shares, budgeted"),
])
def test_bad_combinations(kwargs, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        PruneConfig(**kwargs)


BASE = ["--data_dir", str(SAMPLE_DATA), "--nsamples", "4", "--seqlen", "64", "--device", "cpu", "--no_eval"]


def test_cli_budgeted_run_records_its_budget(tiny_llama_dir, tmp_path):
    out = tmp_path / "results"
    assert cli.main(["--model", str(tiny_llama_dir), *BASE, "--prune_method", "sparsegpt", "--tier_scope", "row",
                     "--tier_assignment", "budgeted", "--tier_budget", "s=0.55", "--save", str(out)]) == 0
    maps, metadata = load_tier_maps(out / "tier_map.safetensors")
    assert (metadata.tier_assignment, metadata.tier_budget, metadata.ratios) == ("budgeted", "s=0.55", None)
    report = json.loads((out / "results.json").read_text())
    assert len(maps) == 14 and report["config"]["tier_assignment"] == "budgeted"


@pytest.mark.parametrize("argv, message", [
    (["--tier_assignment", "budgeted"], "error: --tier_assignment budgeted needs --tier_budget"),
    (["--tier_budget", "0.9x2:4"], "error: --tier_budget applies to --tier_assignment budgeted only"),
    (["--tier_assignment", "budgeted", "--tier_budget", "2:8"], "error: --tier_budget '2:8' is not 2:4"),
])
def test_cli_errors_are_one_line(capsys, no_model_load, argv, message):
    assert cli.main([*argv, "--save", "/nonexistent/never_written"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_cli_budget_below_the_cheapest_tiles_is_one_line(tiny_llama_dir, tmp_path, capsys):
    code = cli.main(["--model", str(tiny_llama_dir), *BASE, "--tier_assignment", "budgeted", "--tier_budget",
                     "0.1x2:4", "--save", str(tmp_path / "never")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: --tier_budget 0.1x2:4 is below the bytes of the cheapest tiles"), err
    assert not (tmp_path / "never").exists()
