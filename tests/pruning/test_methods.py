"""The registries of scores and patterns (lib/pruning/methods.py)."""


def test_each_pattern_is_one_lookup_with_its_own_rule():
    import torch

    from lib.pruning.driver import PruneConfig, _chunk_selector
    from lib.pruning.methods import PATTERNS

    score = torch.rand(32, 64, generator=torch.Generator().manual_seed(0))
    kept = {}
    for name, pattern in PATTERNS.items():
        tier_map = torch.zeros(2, 4, dtype=torch.uint8) if pattern.tiers else None  # all blocks dense
        select, width = _chunk_selector(PruneConfig(sparsity_type=name), tier_map)
        kept[name] = select(score, 0).float().mean().item()
    assert kept == {"three_tier": 1.0, "unstructured": 0.5, "2:4": 0.5, "4:8": 0.5}
