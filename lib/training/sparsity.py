"""Keep a pruned model's zeros while training it with any Hugging Face `Trainer` (or subclass, e.g. TRL's SFTTrainer).

A plain `Trainer` run destroys a pruned model: every pruned weight gets a
gradient and is nonzero after the first optimizer step. The zero pattern of every
Linear weight in the decoder layers is recorded before training as a
`SparsityMask` (bool `keep` [O, I] per weight, True = kept; O = out_features,
I = in_features) and enforced twice per step:

1. gradient masking: a tensor hook on each masked weight zeroes the pruned
   entries of its gradient as autograd produces it, before the gradient is
   accumulated into `.grad` and therefore before DDP's all-reduce sees it;
2. weight re-masking: `SparsityCallback.on_optimizer_step` multiplies the
   weights by `keep` after every optimizer step, so weight decay, mixed
   precision, optimizer state or a sharded optimizer cannot leave a pruned
   weight nonzero.

Usage with any trainer: `trainer = AnyTrainer(..., callbacks=[SparsityCallback(SparsityMask.from_model(model))])`.
`rank_fingerprints` hashes weights and zero patterns per DDP rank so a run can show every rank ended equal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from lib.models.arch import decoder_linear_weights
from lib.tiered.tier_map import TIER_MAP_FILE, load_tier_maps

try:  # transformers is needed only for the callback
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    TrainerCallback = object



class SparsityMask:
    """The zero pattern to preserve: {parameter name: bool keep [O, I]}, True = kept.

    Lifecycle: `from_model` (record) -> `register_gradient_hooks` -> `apply` after
    every optimizer step -> `unchanged` (check) -> `remove_hooks`.
    """

    def __init__(self, keep: dict[str, torch.Tensor]):
        self.keep = keep
        self._handles: list = []

    @classmethod
    def from_model(cls, model: nn.Module, min_layer_sparsity: float = 0.01,
                   required: Sequence[str] = ()) -> "SparsityMask":
        """Record the zeros of every decoder Linear weight with sparsity >= min_layer_sparsity or listed in `required`.

        `required` holds parameter names ("model.layers.0.mlp.up_proj.weight") that are masked whatever
        their sparsity (the modules of a tier map).
        """
        keep = {}
        for name, weight in decoder_linear_weights(model).items():
            layer_keep = weight.detach() != 0
            sparsity = 1.0 - layer_keep.float().mean().item()
            if name in required or (sparsity > 0 and sparsity >= min_layer_sparsity):
                keep[name] = layer_keep
        return cls(keep)

    @property
    def n_pruned(self) -> int:
        return sum(int((~k).sum()) for k in self.keep.values())

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        missing = sorted(set(self.keep) - set(params))
        if missing:
            raise ValueError(f"the model has no parameters {missing[:3]}...: the mask was recorded on another model")
        return {name: params[name] for name in self.keep}

    def register_gradient_hooks(self, model: nn.Module) -> None:
        """Zero the pruned entries of each masked weight's gradient as autograd produces it.

        A hook on a leaf tensor runs before the gradient is accumulated into `.grad`,
        so DDP (whose reducer hooks run after accumulation) all-reduces masked gradients.
        """
        self.remove_hooks()
        for name, param in self._params(model).items():
            keep = self.keep[name]
            self._handles.append(param.register_hook(lambda grad, keep=keep: grad.where(keep.to(grad.device), 0.0)))

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Set every pruned weight to exactly zero, in place."""
        for name, param in self._params(model).items():
            param.masked_fill_(~self.keep[name].to(param.device), 0)

    @torch.no_grad()
    def unchanged(self, model: nn.Module) -> bool:
        """True when each masked weight's set of zeros is exactly the recorded one (no new zeros, none lost)."""
        return all(torch.equal(param != 0, self.keep[name].to(param.device))
                   for name, param in self._params(model).items())


class SparsityCallback(TrainerCallback):
    """Enforces a `SparsityMask` during `Trainer.train`: gradient hooks for the run, re-masking after each step."""

    def __init__(self, mask: SparsityMask):
        self.mask = mask

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # after a --resume_from_checkpoint load, before the first forward
        self.mask.register_gradient_hooks(model)
        self.mask.apply(model)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.mask.apply(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.mask.remove_hooks()


def tier_map_modules(model_dir: Path) -> list[str]:
    """Module paths listed in the model directory's tier map, [] when it has none (or `model_dir` is a file).

    Reads the file through `lib.tiered.tier_map.load_tier_maps`: a damaged file or metadata that is not
    `TierMetadata`'s raises WeightFileError naming the file."""
    path = model_dir / TIER_MAP_FILE
    if not path.is_file():
        return []
    maps, _ = load_tier_maps(path)
    return sorted(maps)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and raw bytes of tensors, in key order (exact equality check)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rank_fingerprints(model: nn.Module, mask: SparsityMask | None) -> list[dict[str, Any]]:
    """Per process {"rank", "weights_sha256", "zero_pattern_sha256", "zero_pattern_unchanged"}, gathered.

    Exact hashes of all parameters and of the decoder Linear zero pattern, so a DDP run can show that
    every rank ends with the same model. Every rank must call this; [] without torch.distributed.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return []
    fingerprint = {
        "rank": dist.get_rank(),
        "weights_sha256": tensors_sha256(dict(model.named_parameters())),
        "zero_pattern_sha256": tensors_sha256({n: w == 0 for n, w in decoder_linear_weights(model).items()}),
        "zero_pattern_unchanged": None if mask is None else mask.unchanged(model),
    }
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, fingerprint)
    return gathered

