"""The one layer-wise pruning driver, shared by every method and sparsity type.

Flow (Wanda / SparseGPT): capture (`lib.pruning.capture`), per calibration batch, the first decoder layer's
hidden states and, for *every* layer, the other arguments the model passes to it
(attention mask and rotary embeddings of the layer's own type: sliding-window and global
layers get different ones); then for each layer: stream the calibration batches through
it with its own arguments and hooks on its Linear modules to accumulate statistics,
compute every Linear's mask (and, for SparseGPT, reconstructed weights), apply it, and
recompute the layer's outputs with the pruned weights as the next layer's inputs.

Memory: the calibration activations twice (inputs and outputs of the current layer),
one layer's statistics, and the per-layer arguments, each distinct tensor stored once
(one mask / rotary pair per layer type and batch shape).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from lib.core.arguments import flag
from lib.core.cli import check_finite_fields
from lib.core.results import Timer
from lib.models.arch import decoder_layers_path, decoder_linears, find_linears, get_decoder_layers, unpruned_weights
from lib.pruning import allocation, budget
from lib.pruning.allocation import plan_layer_ratios
from lib.pruning.capture import (Captured, LayerInput, capture_layer_inputs, hidden_output, layer_device, run_layer,
                                 to_device)
from lib.pruning.masks import (DEFAULT_RATIOS, INTRA_BLOCK_ALIASES, INTRA_BLOCK_SCORES, assign_tiers,
                               assign_tiers_row_balanced, block_mean_scores, tier_histogram)
from lib.pruning.methods import PATTERNS, SCORES, pattern_names, score_names
from lib.pruning.sparsegpt import ChunkSelector, HessianFactor, inverse_hessian_factor, sparsegpt_reconstruct
from lib.pruning.stats import ActNormStats, HessianStats
from lib.tiered.tier_map import (DEFAULT_BLOCK_SIZE, DEFAULT_TOPK_PER_BLOCK, TIER_ASSIGNMENTS, TIER_SCOPES, TierMetadata,
                                 check_block_size, check_ratios, check_topk)

logger = logging.getLogger(__name__)


@dataclass
class PruneConfig:
    """What to prune and how; validated on construction (messages name the CLI flag).

    The pruning CLI's flags are these fields (lib.core.arguments.DataclassParser, an HfArgumentParser; each
    field a `lib.core.arguments.flag`): its metadata holds the flag's help, choices (functions of the registries,
    read when the parser is built), other spellings ("aliases") and, for `ratios`, its spelling ("flag"); the
    defaults are written only here.
    """

    _argument_group_name = "pruning (lib.pruning.driver.PruneConfig)"  # its flags' group in --help (not a field)

    sparsity_type: str = flag("three_tier", "sparsity pattern (lib.pruning.methods.PATTERNS)", choices=pattern_names)
    prune_method: str = flag("wanda", "what ranks the weights (lib.pruning.methods.SCORES); sparsegpt also "
                             "reconstructs the kept ones", choices=score_names)
    sparsity_ratio: float = flag(0.5, "sparsity for --sparsity_type unstructured")
    ratios: tuple[float, float, float] = flag(DEFAULT_RATIOS, "block shares of the three tiers, >= 0 and summing to 1",
                                              flag="--sparsity_ratios", metavar=("DENSE", "MID_2_4", "TOPK"))
    block_size: int = flag(DEFAULT_BLOCK_SIZE, "side of the square blocks the tiers are assigned to")
    topk_per_block: int = flag(DEFAULT_TOPK_PER_BLOCK, "weights kept in each top-k block")
    intra_block_score: str = flag("method", "what picks the kept weights inside 2:4 and top-k blocks: the "
                                  "--prune_method score (method; 'wanda' is accepted for it) or |W| (magnitude)",
                                  aliases=("--intra_block_metric",),
                                  choices=(*INTRA_BLOCK_SCORES, *INTRA_BLOCK_ALIASES))
    tier_scope: str = flag("matrix", "rank blocks per matrix, per matrix balanced over block rows (row), per layer, "
                           "or model-wide", choices=TIER_SCOPES)
    tier_assignment: str = flag("shares", "how blocks get tiers: the fixed --sparsity_ratios shares by mean block score "
                                "(shares), or the least estimated loss within the byte budget --tier_budget per "
                                "--tier_scope (budgeted; lib.pruning.budget)", choices=TIER_ASSIGNMENTS)
    tier_budget: str | None = flag(None, "byte budget of --tier_assignment budgeted, per matrix: 2:4 (the bytes of "
                                   "uniform 2:4), Fx2:4 (a fraction F of them, e.g. 0.9x2:4) or s=S (sparsity-"
                                   "equivalent: 2(1-S) x 2:4's bytes)")
    owl: bool = flag(False, "outlier-weighted layer-wise tier shares (OWL)")
    owl_lambda: float = flag(0.08, "OWL: layer densities shift within +-lambda around the target")
    owl_m: float = flag(5.0, "OWL: outlier threshold, times the mean score")
    percdamp: float = flag(0.01, "SparseGPT Hessian damping")
    calib_batch_size: int = flag(8, "calibration samples per layer forward")
    profile_nsamples: int | None = flag(4, "calibration samples (the first N) for the dense-model profile of --owl and "
                                        "--tier_scope model (give --nsamples' value for the full profile)")

    def __post_init__(self) -> None:
        self.ratios = tuple(float(r) for r in self.ratios)
        check_finite_fields(self)  # NaN passes every comparison below
        if self.sparsity_type not in PATTERNS:
            raise ValueError(f"--sparsity_type {self.sparsity_type!r} is not one of {', '.join(PATTERNS)}")
        if self.prune_method not in SCORES:
            raise ValueError(f"--prune_method {self.prune_method!r} is not one of {', '.join(SCORES)}")
        self.intra_block_score = INTRA_BLOCK_ALIASES.get(self.intra_block_score, self.intra_block_score)
        if self.intra_block_score not in INTRA_BLOCK_SCORES:
            raise ValueError(f"--intra_block_score {self.intra_block_score!r} is not one of {', '.join(INTRA_BLOCK_SCORES)}")
        if self.tier_scope not in TIER_SCOPES:
            raise ValueError(f"--tier_scope {self.tier_scope!r} is not one of {', '.join(TIER_SCOPES)}")
        check_block_size(self.block_size, "--block_size")  # every type: --save_compressed tiles by it
        check_topk(self.topk_per_block, self.block_size, "--topk_per_block")
        if self.sparsity_type == "three_tier":
            check_ratios(self.ratios, "--sparsity_ratios")
        elif self.sparsity_type == "unstructured" and not 0.0 <= self.sparsity_ratio < 1.0:
            raise ValueError(f"--sparsity_ratio must be in [0, 1), got {self.sparsity_ratio}")
        if self.owl and self.sparsity_type != "three_tier":
            raise ValueError("--owl applies to --sparsity_type three_tier only")
        budget.check_budget_flags(self)
        if self.budgeted and self.ratios != DEFAULT_RATIOS:
            raise ValueError("--sparsity_ratios are fixed shares; --tier_assignment budgeted does not use them")
        if self.profile_nsamples is not None and self.profile_nsamples <= 0:
            raise ValueError(f"--profile_nsamples must be positive, got {self.profile_nsamples}")
        if self.calib_batch_size <= 0:
            raise ValueError(f"--calib_batch_size must be positive, got {self.calib_batch_size}")
        if self.percdamp <= 0:
            raise ValueError(f"--percdamp must be positive, got {self.percdamp}")
        if not 0 <= self.owl_lambda < 0.5 or self.owl_m <= 0:
            raise ValueError(f"--owl_lambda must be in [0, 0.5) and --owl_m > 0, got {self.owl_lambda}, {self.owl_m}")

    def tier_metadata(self, model: str) -> TierMetadata:
        """What the tier maps of this config record about it (the ratios and the rest only for three_tier); `model`:
        the pruned model as given."""
        if self.sparsity_type != "three_tier":
            return TierMetadata(self.block_size, None, self.topk_per_block)
        if self.budgeted:
            return TierMetadata(self.block_size, None, self.topk_per_block, self.tier_scope, self.owl, model,
                                self.tier_assignment, self.tier_budget)
        return TierMetadata(self.block_size, self.ratios, self.topk_per_block, self.tier_scope, self.owl, model)

    @property
    def budgeted(self) -> bool:
        return self.tier_assignment == "budgeted"

    @property
    def needs_calibration(self) -> bool:
        return SCORES[self.prune_method].stats_class is not None

    @property
    def needs_profile(self) -> bool:
        return self.sparsity_type == "three_tier" and (self.tier_scope == "model" or self.owl)


def check_block_fits(model: nn.Module, config: PruneConfig) -> None:
    """Raise ValueError naming the smallest decoder Linear when --block_size exceeds one of its sides.

    A block wider than the matrix makes every block partial (a 1000-wide block on 576-wide matrices
    ranks one block per matrix: all "top-k", 99.99% sparsity). Cheap: reads the weight shapes only.
    """
    if config.sparsity_type != "three_tier":
        return
    prefix = decoder_layers_path(model)
    shapes = {f"{prefix}.{i}.{name}": tuple(linear.weight.shape)
              for i, layer in enumerate(decoder_linears(model)) for name, linear in layer.items()}
    if config.budgeted:
        budget.check_budget_fits(config, next(iter(decoder_linears(model)[0].values())).weight.element_size())
    name, shape = min(shapes.items(), key=lambda item: min(item[1]))
    if config.block_size > min(shape):
        raise ValueError(f"--block_size {config.block_size} exceeds the smallest side of {name} "
                         f"({shape[0]} x {shape[1]}); use at most {min(shape) - min(shape) % 4}")


@dataclass
class PruneResult:
    """Per-matrix records, tier maps by module path, per-layer tier shares and timings (seconds)."""

    matrices: list[dict] = field(default_factory=list)
    tier_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    layer_ratios: list[tuple[float, float, float]] = field(default_factory=list)
    outlier_ratios: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    unpruned: dict = field(default_factory=dict)


@torch.no_grad()
def collect_stats(layer: nn.Module, batches: list[LayerInput], stats_class: type) -> dict[str, Any]:
    """Stream all batches through `layer` with hooks feeding each Linear's inputs to a `stats_class`.

    Linears that read the same input tensor (q/k/v, gate/up) share one accumulator: the
    returned dict maps their names to the same object, fed once per batch.
    """
    linears = find_linears(layer)
    stats: dict[str, Any] = {}
    fed: dict[int, tuple[torch.Tensor, Any]] = {}  # id(input) -> (input, accumulator) within one batch

    def hook(name: str, module: nn.Linear, inp: tuple) -> None:
        x = inp[0]
        shared = fed.get(id(x))
        if shared is not None and shared[0] is x:
            if stats.setdefault(name, shared[1]) is not shared[1]:
                raise RuntimeError(f"{name} shares its input with other Linears in some batches only")
            return
        if name not in stats:
            stats[name] = stats_class(module.in_features, module.weight.device)
        stats[name].add_batch(x.detach())
        fed[id(x)] = (x, stats[name])  # holding x keeps its id unique for the batch

    handles = [m.register_forward_hook(lambda mod, inp, out, n=name: hook(n, mod, inp)) for name, m in linears.items()]
    try:
        device = layer_device(layer)
        for hidden, args, kwargs in batches:
            layer(hidden.to(device), *to_device(args, device), **to_device(kwargs, device))
            fed.clear()
    finally:
        for h in handles:
            h.remove()
    return stats


def _scores(linears: dict[str, nn.Linear], stats: dict[str, Any] | None, method: str) -> dict[str, torch.Tensor]:
    """Importance [O, I] float32 per Linear: the registered score of `method` (lib.pruning.methods.SCORES)."""
    score = SCORES[method].score
    return {n: score(m.weight, stats[n] if stats is not None else None) for n, m in linears.items()}


def _chunk_selector(config: PruneConfig, tier_map: torch.Tensor | None) -> tuple[ChunkSelector, int]:
    """The mask rule for one chunk of columns of one Linear (see ChunkSelector), and the chunk width."""
    return PATTERNS[config.sparsity_type].selector(config, tier_map)


def _prune_linear(module: nn.Linear, score: torch.Tensor, config: PruneConfig, tier_map: torch.Tensor | None) -> None:
    """Compute the keep mask of one Linear from its score (|W| inside blocks for --intra_block_score magnitude)."""
    if tier_map is not None and config.intra_block_score == "magnitude":
        score = module.weight.float().abs()
    select, _ = _chunk_selector(config, tier_map)
    module.weight.data.masked_fill_(~select(score, 0), 0)  # +0.0, never -0.0: zeros stay bit-identical in any format


def _sparsegpt_prune(
    modules: list[nn.Linear], stats: HessianStats, config: PruneConfig, tier_maps: list[torch.Tensor | None],
    factor: HessianFactor | None = None,
) -> None:
    """SparseGPT on Linears that read the same input: one factor (given, or computed here), one solve of their
    stacked weights.

    Rows are solved independently, so stacking changes only the order of float additions;
    each Linear keeps its own mask rule (N:M, being per row, runs once on the stack).
    """
    sizes = [m.out_features for m in modules]
    selectors = [_chunk_selector(config, t) for t in tier_maps]
    chunk = selectors[0][1]
    if PATTERNS[config.sparsity_type].row_wise or len(modules) == 1:
        select = selectors[0][0]
    else:
        def select(saliency, first_column):
            parts = saliency.split(sizes)  # (O_i, c) per Linear
            return torch.cat([rule(part, first_column) for (rule, _), part in zip(selectors, parts)])
    factor = factor or inverse_hessian_factor(stats.hessian, config.percdamp)
    weight = torch.cat([m.weight for m in modules])  # (sum O_i, I)
    new_weight, _ = sparsegpt_reconstruct(weight, factor, select, chunk)
    for module, part in zip(modules, new_weight.split(sizes)):
        module.weight.data.copy_(part.to(module.weight.dtype))


def _prune_layer(
    linears: dict[str, nn.Linear], scores: dict[str, torch.Tensor], stats: dict[str, Any] | None,
    config: PruneConfig, tier_maps: dict[str, torch.Tensor | None], factors: dict[int, HessianFactor] | None = None,
) -> None:
    """Prune every Linear of one layer in place (SparseGPT: grouped by shared input statistics; factors: by
    id(statistics), computed already)."""
    if not SCORES[config.prune_method].reconstruct:
        for name, module in linears.items():
            _prune_linear(module, scores[name], config, tier_maps[name])
        return
    groups: dict[int, list[str]] = {}
    for name in linears:
        groups.setdefault(id(stats[name]), []).append(name)
    for names in groups.values():
        _sparsegpt_prune([linears[n] for n in names], stats[names[0]], config, [tier_maps[n] for n in names],
                         (factors or {}).get(id(stats[names[0]])))


def _profile_stats_class(config: PruneConfig) -> type:
    """The statistic of the dense-model profile: the score's own, ActNormStats for a reconstruction method."""
    score = SCORES[config.prune_method]
    return ActNormStats if score.reconstruct else score.stats_class


def profile_layers(
    model: nn.Module, captured: Captured | None, config: PruneConfig, progress: bool = True
) -> tuple[list[dict[str, torch.Tensor]], list[float]]:
    """One pass over the dense model: block mean scores of every Linear and each layer's outlier ratio.

    captured: `capture_layer_inputs` of the calibration samples (None for magnitude pruning).
    Each layer runs once per batch: the forward that accumulates its statistics also yields
    the next layer's inputs (dense weights, so no second forward is needed).
    """
    block_scores, outliers = [], []
    hidden, layer_args = captured if captured is not None else ([], None)
    layers = get_decoder_layers(model)
    for i, (layer, linears) in enumerate(
        tqdm(list(zip(layers, decoder_linears(model))), desc="profile", disable=not progress, unit="layer")
    ):
        stats = None
        if config.needs_calibration:
            batches = layer_args.batches(i, hidden)
            outputs = []
            handle = layer.register_forward_hook(lambda module, args, out: outputs.append(out))
            try:
                stats = collect_stats(layer, batches, _profile_stats_class(config))
            finally:
                handle.remove()
            hidden = [hidden_output(layer, out, h) for out, h in zip(outputs, hidden, strict=True)]
        scores = _scores(linears, stats, config.prune_method)
        block_scores.append(budget.profile_entry(linears, scores, config) if config.budgeted else
                            {n: block_mean_scores(s, config.block_size).cpu() for n, s in scores.items()})
        outliers.append(allocation.outlier_ratio(list(scores.values()), config.owl_m))
    return block_scores, outliers


Profile = tuple[list[dict[str, torch.Tensor]], list[float]]


def profile_model(model: nn.Module, samples: list[torch.Tensor], config: PruneConfig, progress: bool = True) -> Profile:
    """Block mean scores and outlier ratios of the dense model (see `profile_layers`).

    Uses the first `config.profile_nsamples` samples (all when None): the tier shares it
    plans move by at most 0.01 from 32 samples to 4 on the default model
    (`scripts/bench_owl_profile.py`), at an eighth of the cost.
    """
    samples = samples[: config.profile_nsamples]
    captured = capture_layer_inputs(model, samples, config.calib_batch_size) if config.needs_calibration else None
    return profile_layers(model, captured, config, progress)


def prune_model(
    model: nn.Module,
    samples: list[torch.Tensor],
    config: PruneConfig,
    progress: bool = True,
    profile: Profile | None = None,
) -> PruneResult:
    """Prune every Linear of the decoder layers of `model` in place (MoE routers excluded: `decoder_linears`).

    samples: calibration input ids, each [1, L] (unused by magnitude pruning).
    profile: a `profile_model` result of the same dense model, samples, block size and
    owl_m, to reuse across configurations (model scope / OWL); computed here when None.
    """
    check_block_fits(model, config)
    result = PruneResult()
    timer = Timer()
    layers = get_decoder_layers(model)
    prefix = decoder_layers_path(model)
    result.unpruned = unpruned_weights(model)
    if result.unpruned["share"] > 0:
        logger.warning(
            "%.2f%% of the decoder weights stay dense (not nn.Linear, or MoE routers): %s",
            100 * result.unpruned["share"], ", ".join(result.unpruned["names"]),
        )
    allotted = None
    result.layer_ratios = [config.ratios] * len(layers)
    if config.needs_profile:
        with timer("profile"):
            block_scores, result.outlier_ratios = profile or profile_model(model, samples, config, progress)
            if config.budgeted:
                allotted = budget.model_allotments(block_scores, config)
            else:
                result.layer_ratios = plan_layer_ratios(block_scores, result.outlier_ratios, config)
            del block_scores
    if config.needs_calibration:
        with timer("capture"):
            hidden, layer_args = capture_layer_inputs(model, samples, config.calib_batch_size)
    stats_class = SCORES[config.prune_method].stats_class
    for i, (layer, linears) in enumerate(
        tqdm(list(zip(layers, decoder_linears(model))), desc="prune", disable=not progress, unit="layer")
    ):
        stats = None
        if config.needs_calibration:
            batches = layer_args.batches(i, hidden)
            with timer("calibration_forward"):
                stats = collect_stats(layer, batches, stats_class)
        with timer("mask"):
            scores = _scores(linears, stats, config.prune_method)
            tier_maps: dict[str, torch.Tensor | None] = dict.fromkeys(linears)
            factors = None
            if config.budgeted:
                with timer("tier_budget"):  # part of "mask"
                    tier_maps, factors = budget.layer_tier_maps(linears, scores, stats, config, allotted and allotted[i])
                result.layer_ratios[i] = allocation.layer_ratios_from_counts(
                    {n: tuple(tier_histogram(t).values()) for n, t in tier_maps.items()})
            elif config.sparsity_type == "three_tier":
                block = {n: block_mean_scores(s, config.block_size) for n, s in scores.items()}
                counts = allocation.matrix_counts(block, result.layer_ratios[i], config.tier_scope)
                assign = assign_tiers_row_balanced if config.tier_scope == "row" else assign_tiers
                tier_maps = {n: assign(block[n], counts[n]) for n in linears}
            _prune_layer(linears, scores, stats, config, tier_maps, factors)
            for name, module in linears.items():
                record = {"layer": i, "name": name, "shape": list(module.weight.shape),
                          "sparsity": (module.weight == 0).float().mean().item()}
                if tier_maps[name] is not None:
                    record["tiers"] = tier_histogram(tier_maps[name])
                    result.tier_maps[f"{prefix}.{i}.{name}"] = tier_maps[name].cpu()
                result.matrices.append(record)
            del stats, scores
        if config.needs_calibration:
            with timer("calibration_forward"):
                hidden = run_layer(layer, batches)
        layer_sparsity = sum(r["sparsity"] * r["shape"][0] * r["shape"][1] for r in result.matrices if r["layer"] == i) / sum(
            r["shape"][0] * r["shape"][1] for r in result.matrices if r["layer"] == i
        )
        logger.info("layer %d: sparsity %.4f", i, layer_sparsity)
    result.timings = timer.seconds
    return result
