"""The decoder layout of a causal LM, found by rule rather than by a `model_type` table.

The decoder layers are the `nn.ModuleList` of identical blocks whose class the model declares in
`_no_split_modules` (else the largest such list holding `nn.Linear` modules), and every `nn.Linear`
inside them is pruned except mixture-of-experts routers and gates (`is_router`). Everything that
depends on that layout lives here: the layers, their Linears, the weights pruning and the tiered
format work on (`decoder_linear_weights`), their sparsity and the input device.
"""

from __future__ import annotations

import torch
from torch import nn

from lib.core.errors import ModelLoadError

# config attributes that hold the number of routed experts of a mixture-of-experts model
EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")


def _block_lists(model: nn.Module) -> dict[str, nn.ModuleList]:
    """Every non-empty ModuleList of one block class that holds nn.Linear modules, by module path."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1
        and find_linears(module[0])
    }


def decoder_layers_path(model: nn.Module) -> str:
    """Module path of the decoder layer list ("model.layers", "model.decoder.layers", "gpt_neox.layers").

    The list whose block class is named in the model's `_no_split_modules` (what transformers
    itself declares as a decoder layer), else the largest list of identical blocks holding
    nn.Linear modules; ties and several declared lists go to the one with most parameters.
    Raises ModelLoadError when the model has none.
    """
    lists = _block_lists(model)
    declared = set(getattr(model, "_no_split_modules", None) or ())
    candidates = {n: m for n, m in lists.items() if type(m[0]).__name__ in declared} or lists
    if not candidates:
        raise ModelLoadError(
            f"{type(model).__name__} has no decoder stack to prune: no nn.ModuleList of identical layers "
            f"containing nn.Linear modules (see 'Supported models' in the README)"
        )
    return max(candidates, key=lambda n: sum(p.numel() for p in candidates[n].parameters()))


def check_supported(model: nn.Module) -> None:
    """Raise ModelLoadError, before any expensive step, when `model` has no prunable decoder stack."""
    decoder_layers_path(model)


def get_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a causal LM (see `decoder_layers_path`)."""
    return model.get_submodule(decoder_layers_path(model))


def find_linears(module: nn.Module) -> dict[str, nn.Linear]:
    """All nn.Linear submodules by their path relative to `module`."""
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


def expert_count(config) -> int | None:
    """Number of routed experts of a mixture-of-experts config, None for a dense model."""
    for key in EXPERT_COUNT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def is_router(linear: nn.Linear, n_experts: int | None) -> bool:
    """A mixture-of-experts router or gate: one output per expert, or a single scalar gate."""
    return linear.out_features == 1 or (n_experts is not None and linear.out_features == n_experts)


def decoder_linears(model: nn.Module) -> list[dict[str, nn.Linear]]:
    """Per decoder layer, the Linears that are pruned, by path relative to the layer (routers excluded)."""
    n_experts = expert_count(model.config)
    return [
        {name: m for name, m in find_linears(layer).items() if not is_router(m, n_experts)}
        for layer in get_decoder_layers(model)
    ]


def decoder_linear_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weight of every pruned nn.Linear inside the decoder layers, by full parameter name (lm_head excluded)."""
    names = {id(p): name for name, p in model.named_parameters()}
    return {names[id(linear.weight)]: linear.weight for layer in decoder_linears(model) for linear in layer.values()}


def unpruned_weights(model: nn.Module) -> dict:
    """Decoder weight matrices the driver leaves dense (MoE routers, fused 3-D expert tensors, ...).

    Counts every parameter of >= 2 dimensions inside the decoder layers that is not a pruned
    Linear weight. Returns {"share": fraction of all such decoder weights, "weights": count,
    "names": {path relative to a layer: count summed over layers}}.
    """
    pruned = {id(w) for w in decoder_linear_weights(model).values()}
    names: dict[str, int] = {}
    total = 0
    for layer in get_decoder_layers(model):
        for name, param in layer.named_parameters():
            if param.dim() < 2:
                continue
            total += param.numel()
            if id(param) not in pruned:
                names[name] = names.get(name, 0) + param.numel()
    weights = sum(names.values())
    return {"share": weights / max(total, 1), "weights": weights, "names": names}


@torch.no_grad()
def measure_sparsity(model: nn.Module) -> dict:
    """Exactly-zero weights over all decoder Linear weights: {"sparsity", "zeros", "total", "modules"}.

    "modules" maps each weight's parameter name to its own sparsity.
    """
    modules, zeros, total = {}, 0, 0
    for name, weight in decoder_linear_weights(model).items():
        n_zero = int((weight == 0).sum())
        modules[name] = n_zero / weight.numel()
        zeros += n_zero
        total += weight.numel()
    return {"sparsity": zeros / max(total, 1), "zeros": zeros, "total": total, "modules": modules}


def model_device(model: nn.Module) -> torch.device:
    """Device of the input embeddings (where input ids must go)."""
    return model.get_input_embeddings().weight.device
