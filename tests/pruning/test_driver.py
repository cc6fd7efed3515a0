"""The layer-wise driver on tiny random Llama and OPT models."""

import pytest
import torch

from lib.models.arch import find_linears, get_decoder_layers, measure_sparsity
from lib.pruning.capture import capture_layer_inputs, run_layer
from lib.pruning.driver import PruneConfig, profile_model, prune_model
from lib.pruning.masks import expand_tier_map, tier_counts
from tests.helpers import check_structure

from tests.helpers import make_llama, make_opt

MAKERS = {"llama": make_llama, "opt": make_opt}


def samples(n=6, length=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 400, (1, length), generator=g) for _ in range(n)]


def final_norm(model):
    return model.model.norm if model.config.model_type == "llama" else model.model.decoder.final_layer_norm


@pytest.mark.parametrize("arch", MAKERS)
def test_driver_with_nothing_pruned_reproduces_forward(arch):
    model = MAKERS[arch]()
    ids = [torch.randint(4, 400, (1, 20)), torch.randint(4, 400, (1, 20)), torch.randint(4, 400, (1, 13))]
    hidden, layer_args = capture_layer_inputs(model, ids, batch_size=2)
    assert [h.shape[:2] for h in hidden] == [(2, 20), (1, 13)]
    for i, layer in enumerate(get_decoder_layers(model)):
        hidden = run_layer(layer, layer_args.batches(i, hidden))
    with torch.no_grad():
        norm = final_norm(model)
        ours = torch.cat([model.lm_head(norm(h))[:, :13] for h in hidden])
        ref = torch.cat([model(torch.cat(ids[:2])).logits[:, :13], model(ids[2]).logits])
    assert torch.allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("arch, scope", [("llama", "matrix"), ("opt", "matrix"), ("llama", "row")])
def test_three_tier_exact_counts_and_structure(arch, scope):
    model = MAKERS[arch]()
    before = {n: m.weight.clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    result = prune_model(model, samples(), PruneConfig(tier_scope=scope), progress=False)
    assert len(result.matrices) == 2 * len(find_linears(get_decoder_layers(model)[0]))
    for path, tier_map in result.tier_maps.items():
        weight = model.get_submodule(path).weight
        counts = tier_counts(tier_map.numel(), (0.35, 0.45, 0.2))
        assert tuple((tier_map == t).sum().item() for t in range(3)) == counts, path
        keep = weight != 0
        check_structure(keep, tier_map, 16, 15)
        dense = expand_tier_map(tier_map, 16, *weight.shape) == 0
        assert torch.equal(weight[dense], before[path][dense]), "dense blocks keep their exact weights"
    assert 0.40 < measure_sparsity(model)["sparsity"] < 0.47


def test_masks_identical_across_runs():
    runs = []
    for _ in range(2):
        model = make_llama()
        prune_model(model, samples(seed=3), PruneConfig(), progress=False)
        runs.append([m.weight != 0 for m in find_linears(model.model.layers).values()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_calibration_changes_the_mask():
    masks = []
    for seed in (0, 1):
        model = make_llama()
        prune_model(model, samples(seed=seed), PruneConfig(sparsity_type="unstructured"), progress=False)
        masks.append(torch.cat([(m.weight != 0).flatten() for m in find_linears(model.model.layers).values()]))
    assert not torch.equal(*masks)


@pytest.mark.parametrize("sparsity_type, expected", [("unstructured", 0.5), ("2:4", 0.5), ("4:8", 0.5)])
def test_baselines_through_the_same_driver(sparsity_type, expected):
    model = make_llama()
    prune_model(model, samples(), PruneConfig(sparsity_type=sparsity_type, sparsity_ratio=0.5), progress=False)
    assert measure_sparsity(model)["sparsity"] == pytest.approx(expected, abs=1e-9)
    for m in find_linears(model.model.layers).values():
        if sparsity_type == "unstructured":
            assert ((m.weight == 0).sum(1) == m.in_features // 2).all()
        else:
            n, mm = map(int, sparsity_type.split(":"))
            groups = (m.weight != 0).view(m.out_features, -1, mm)
            assert (groups.sum(-1) == n).all()


def test_sparsegpt_unstructured_hits_the_ratio():
    """SparseGPT decides 128 columns at a time; each chunk prunes round(O * width * ratio) weights."""
    ratio = 0.45 * 0.5 + 0.2 * (1 - 15 / 256)  # the three-tier scheme's overall sparsity, 0.41328
    model = make_llama()
    prune_model(model, samples(), PruneConfig(prune_method="sparsegpt", sparsity_type="unstructured", sparsity_ratio=ratio), progress=False)
    for m in find_linears(model.model.layers).values():
        for chunk in (m.weight == 0).split(128, dim=1):
            assert chunk.sum().item() == round(chunk.numel() * ratio)
    assert measure_sparsity(model)["sparsity"] == pytest.approx(ratio, abs=2e-4)


def test_magnitude_needs_no_calibration():
    model = make_llama()
    prune_model(model, [], PruneConfig(prune_method="magnitude", sparsity_type="2:4"), progress=False)
    weight = model.model.layers[0].mlp.up_proj.weight
    groups = weight.abs().view(weight.shape[0], -1, 4)
    kept = (weight != 0).view_as(groups)
    # the kept two are the two largest magnitudes of every group
    assert torch.equal(kept, groups >= groups.topk(2, -1).values[..., 1:])


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_shared_profile_gives_the_same_model(method):
    """A dense-model profile computed once and passed in prunes exactly like the driver's own."""
    config = PruneConfig(prune_method=method, tier_scope="model", owl=True)
    own, shared = make_llama(), make_llama()
    profile = profile_model(make_llama(), samples(), config, progress=False)
    a = prune_model(own, samples(), config, progress=False)
    b = prune_model(shared, samples(), config, progress=False, profile=profile)
    assert a.layer_ratios == b.layer_ratios
    for (name, x), y in zip(own.state_dict().items(), shared.state_dict().values()):
        assert torch.equal(x, y), name


def test_profile_takes_one_forward_and_equals_stats_then_outputs(monkeypatch):
    """The profile's single dense forward per layer gives what collect_stats followed by run_layer give."""
    from lib.pruning import driver as prune
    from lib.pruning.masks import block_mean_scores, wanda_score
    from lib.pruning.stats import ActNormStats

    model, ids, config = make_llama(), samples(), PruneConfig(owl=True, calib_batch_size=4, profile_nsamples=None)
    hidden, layer_args = capture_layer_inputs(model, ids, 4)
    expected = []
    for i, layer in enumerate(get_decoder_layers(model)):
        batches = layer_args.batches(i, hidden)
        stats = prune.collect_stats(layer, batches, ActNormStats)
        expected.append({n: block_mean_scores(wanda_score(m.weight, stats[n].act_norm_sq), 16) for n, m in find_linears(layer).items()})
        hidden = run_layer(layer, batches)
    calls = []
    monkeypatch.setattr(prune, "run_layer", lambda *a: calls.append(a))
    block_scores, outliers = profile_model(model, ids, config, progress=False)
    assert not calls, "no second forward"
    for got, want in zip(block_scores, expected, strict=True):
        assert all(torch.equal(got[n], want[n]) for n in want)
    assert len(outliers) == 2


def test_profile_nsamples_uses_the_first_samples():
    config = PruneConfig(owl=True, profile_nsamples=None)
    subset = profile_model(make_llama(), samples(), PruneConfig(owl=True, profile_nsamples=3), progress=False)
    reference = profile_model(make_llama(), samples()[:3], config, progress=False)
    full = profile_model(make_llama(), samples(), config, progress=False)
    assert subset[1] == reference[1] and subset[1] != full[1]


@pytest.mark.parametrize("scope, owl", [("layer", False), ("model", False), ("matrix", True), ("model", True), ("row", True)])
def test_allocation_scopes_keep_totals(scope, owl):
    model = make_llama()
    config = PruneConfig(tier_scope=scope, owl=owl)
    result = prune_model(model, samples(), config, progress=False)
    maps = list(result.tier_maps.values())
    for path, tier_map in result.tier_maps.items():
        check_structure(model.get_submodule(path).weight != 0, tier_map, 16, 15)
    total = sum(m.numel() for m in maps)
    counts = [sum((m == t).sum().item() for m in maps) for t in range(3)]
    if not owl:
        if scope == "model":
            assert tuple(counts) == tier_counts(total, (0.35, 0.45, 0.2))
        for i in range(2):  # layer scope: each layer's totals are exact
            layer_maps = [m for p, m in result.tier_maps.items() if f".{i}." in p]
            n = sum(m.numel() for m in layer_maps)
            layer_counts = tuple(sum((m == t).sum().item() for m in layer_maps) for t in range(3))
            if scope == "layer":
                assert layer_counts == tier_counts(n, (0.35, 0.45, 0.2))
    else:
        assert len(result.outlier_ratios) == 2
        base = prune_model(make_llama(), samples(), PruneConfig(tier_scope=scope), progress=False).layer_ratios
        shifts = [r[0] - b[0] for r, b in zip(result.layer_ratios, base)]
        assert shifts[0] != 0 and shifts[0] == pytest.approx(-shifts[1])  # zero-mean OWL shift
        for r, b, shift in zip(result.layer_ratios, base, shifts):  # dense moves against top-k only
            assert r[1] == pytest.approx(b[1]) and r[2] == pytest.approx(b[2] - shift)
    assert abs(counts[0] / total - 0.35) < 0.06


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ratios": (0.4, 0.4, 0.4)}, "sum to 1"),
        ({"block_size": 6}, "block_size"),
        ({"sparsity_type": "3:4x"}, "sparsity_type"),
        ({"tier_scope": "global"}, "tier_scope"),
        ({"sparsity_type": "unstructured", "sparsity_ratio": 1.5}, "sparsity_ratio"),
        ({"owl": True, "sparsity_type": "2:4"}, "owl"),
        ({"calib_batch_size": 0}, "calib_batch_size"),
        ({"profile_nsamples": 0}, "profile_nsamples"),
    ],
)
def test_config_errors_name_the_flag(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PruneConfig(**kwargs)


def test_owl_shifts_stay_exact_when_clamped():
    from lib.pruning.allocation import shifted_ratios

    base = [(0.35, 0.45, 0.2)] * 3
    out = shifted_ratios(base, [0.3, -0.1, -0.2], [100, 100, 100])  # layer 0 can take only 0.2 more dense
    assert out[0] == pytest.approx((0.55, 0.45, 0.0))
    assert sum(r[0] for r in out) / 3 == pytest.approx(0.35)
    assert all(min(r) >= -1e-12 for r in out)
