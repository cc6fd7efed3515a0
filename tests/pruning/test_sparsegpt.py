"""OBS reconstruction under the three-tier structure on a single Linear layer."""

import functools

import pytest
import torch

from lib.models.arch import decoder_layers_path, find_linears, get_decoder_layers
from lib.pruning.capture import capture_layer_inputs, run_layer
from lib.pruning.driver import PruneConfig, _chunk_selector, prune_model
from lib.pruning.masks import (assign_tiers, block_mean_scores, nm_keep, three_tier_keep, tier_counts,
                               unstructured_keep, wanda_score)
from lib.pruning.sparsegpt import inverse_hessian_factor, sparsegpt_reconstruct
from lib.pruning.stats import ActNormStats, HessianStats
from tests.helpers import check_structure

from tests.helpers import make_llama, make_opt

MAKERS = {"llama": make_llama, "opt": make_opt}


def reference_reconstruct(weight, hessian, select, chunk, percdamp=0.01, lazy_block=128):
    """The column-by-column solver as first written (before the grouped updates): the reference."""
    w = weight.float().clone()
    out_features, in_features = w.shape
    u, dead = inverse_hessian_factor(hessian, percdamp)
    w[:, dead] = 0
    keep = torch.zeros_like(w, dtype=torch.bool)
    lazy_block = -(-lazy_block // chunk) * chunk
    for i1 in range(0, in_features, lazy_block):
        i2 = min(i1 + lazy_block, in_features)
        w1 = w[:, i1:i2].clone()  # (O, B)
        u1 = u[i1:i2, i1:i2]  # (B, B)
        err1 = torch.zeros_like(w1)
        keep1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if i % chunk == 0:
                j = min(i + chunk, i2 - i1)
                saliency = w1[:, i:j].pow(2) / u1.diagonal()[i:j].pow(2).unsqueeze(0)  # (O, c)
                keep1[:, i:j] = select(saliency, i1 + i)
            col = w1[:, i]
            q = col * keep1[:, i]
            err = (col - q) / u1[i, i]  # (O,)
            w1[:, i:] -= err.unsqueeze(1) * u1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = err
        w[:, i1:i2] = w1
        keep[:, i1:i2] = keep1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return w * keep, keep


def reconstruct(weight, hessian, select, chunk, percdamp=0.01):
    return sparsegpt_reconstruct(weight, inverse_hessian_factor(hessian, percdamp), select, chunk)


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

    solved, keep = reconstruct(weight, hessian, select, chunk=16)
    check_structure(keep, tier_map, 16, 15)
    assert torch.equal(solved != 0, keep)
    reference = x @ weight.t()
    err_mask = (reference - x @ mask_only.t()).norm()
    err_obs = (reference - x @ solved.t()).norm()
    assert err_obs < 0.8 * err_mask, (err_obs, err_mask)


def test_nothing_pruned_leaves_weights_unchanged():
    weight = torch.randn(8, 16)
    x = correlated_inputs(64, 16)
    solved, keep = reconstruct(weight, x.t() @ x, lambda s, c: torch.ones_like(s, dtype=torch.bool), chunk=4)
    assert keep.all() and torch.allclose(solved, weight, atol=1e-5)


def three_tier_select(tier_map, b=16, k=15):
    return lambda s, c0: three_tier_keep(s, tier_map[:, c0 // b : c0 // b + 1], b, k), b


SELECTORS = {
    "2:4": lambda tiers: ((lambda s, c0: nm_keep(s, 2, 4)), 4),
    "4:8": lambda tiers: ((lambda s, c0: nm_keep(s, 4, 8)), 8),
    "unstructured": lambda tiers: ((lambda s, c0: unstructured_keep(s, 0.5, per_row=False)), 128),
    "three_tier": three_tier_select,
}


@pytest.mark.parametrize("rule", SELECTORS)
@pytest.mark.parametrize("shape", [(40, 72), (24, 300)])
def test_grouped_solver_equals_the_column_by_column_reference(rule, shape):
    """Same masks, weights within float tolerance; 300 columns: a partial lazy block and partial chunks."""
    out_features, in_features = shape
    g = torch.Generator().manual_seed(in_features)
    weight = torch.randn(out_features, in_features, generator=g)
    x = correlated_inputs(4 * in_features, in_features, seed=1)
    x[:, 5] = 0  # a dead input: its column is zeroed in both
    hessian = x.t() @ x
    n_blocks = -(-out_features // 16) * -(-in_features // 16)
    tiers = assign_tiers(torch.rand(-(-out_features // 16), -(-in_features // 16), generator=g), tier_counts(n_blocks, (0.3, 0.4, 0.3)))
    select, chunk = SELECTORS[rule](tiers)
    ref_weight, ref_keep = reference_reconstruct(weight, hessian, select, chunk)
    new_weight, new_keep = reconstruct(weight, hessian, select, chunk)
    assert torch.equal(new_keep, ref_keep)
    assert torch.allclose(new_weight, ref_weight, rtol=1e-4, atol=1e-5 * ref_weight.abs().max().item())
    assert (new_weight[:, 5] == 0).all() and torch.equal(new_weight != 0, new_keep & (ref_weight != 0))
    assert not torch.equal(new_weight, weight * new_keep), "the errors were compensated"


def reference_sparsegpt_prune(model, ids, config, tier_maps):
    """The driver as first written, for SparseGPT: a full X^T X per Linear, each Linear solved alone."""
    hidden, layer_args = capture_layer_inputs(model, ids, config.calib_batch_size)
    prefix = decoder_layers_path(model)
    for i, layer in enumerate(get_decoder_layers(model)):
        batches = layer_args.batches(i, hidden)
        linears = find_linears(layer)
        hessians = {n: torch.zeros(m.in_features, m.in_features) for n, m in linears.items()}

        def accumulate(module, inp, out, hessian):
            x = inp[0].reshape(-1, inp[0].shape[-1]).float()  # (N, I)
            hessian.addmm_(x.t(), x)

        handles = [m.register_forward_hook(functools.partial(accumulate, hessian=hessians[n])) for n, m in linears.items()]
        run_layer(layer, batches)
        for handle in handles:
            handle.remove()
        for name, module in linears.items():
            select, chunk = _chunk_selector(config, tier_maps.get(f"{prefix}.{i}.{name}"))
            module.weight.data.copy_(reference_reconstruct(module.weight, hessians[name], select, chunk, config.percdamp)[0])
        hidden = run_layer(layer, batches)


@pytest.mark.parametrize("arch", ["llama", "opt"])
@pytest.mark.parametrize("sparsity_type, scope", [("2:4", "matrix"), ("4:8", "matrix"), ("unstructured", "matrix"), ("three_tier", "row")])
def test_driver_equals_the_per_linear_reference(arch, sparsity_type, scope):
    """Shared Hessians (q/k/v, gate/up), half-product accumulation and stacked solves: same masks, same model."""
    ids = [torch.randint(4, 400, (1, 24), generator=torch.Generator().manual_seed(i)) for i in range(6)]
    config = PruneConfig(sparsity_type=sparsity_type, prune_method="sparsegpt", tier_scope=scope, calib_batch_size=4)
    model, reference = MAKERS[arch](), MAKERS[arch]()
    result = prune_model(model, ids, config, progress=False)
    reference_sparsegpt_prune(reference, ids, config, result.tier_maps)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n}
    for name, module in linears.items():
        ref = reference.get_submodule(name).weight
        assert torch.equal(module.weight != 0, ref != 0), name
        assert torch.allclose(module.weight, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item()), name
    probe = torch.cat(ids[:2])
    with torch.no_grad():
        assert torch.allclose(model(probe).logits, reference(probe).logits, atol=1e-4)
