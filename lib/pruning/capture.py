"""What each decoder layer receives, captured from the model's own forward, and replaying a layer on it.

`capture_layer_inputs` records, per calibration batch, the first decoder layer's hidden states
and every layer's other arguments (attention mask and rotary embeddings of the layer's own type:
sliding-window and global layers get different ones), without running any layer; `run_layer`
forwards batches through one layer with its own arguments. Equal tensors are stored once (one
mask / rotary pair per layer type and batch shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lib.models.arch import get_decoder_layers, model_device

# One calibration batch as a decoder layer receives it: (hidden [B, T, H], extra positional args, kwargs)
LayerInput = tuple[torch.Tensor, tuple, dict[str, Any]]


class _StopForward(Exception):
    pass


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


def _length_batches(samples: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Stack [1, L] samples into [B, L] batches of equal length (no padding ever)."""
    by_length: dict[int, list[torch.Tensor]] = {}
    for ids in samples:
        by_length.setdefault(ids.shape[-1], []).append(ids.reshape(1, -1))
    batches = []
    for group in by_length.values():
        batches += [torch.cat(group[i : i + batch_size]) for i in range(0, len(group), batch_size)]
    return batches


class _TensorPool:
    """Stores each distinct tensor value once: layers of one type and batches of one shape share masks."""

    def __init__(self) -> None:
        self.kept: list[torch.Tensor] = []
        self.seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id -> (object, kept); cleared per batch

    def intern(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            if id(obj) in self.seen:
                return self.seen[id(obj)][1]
            kept = next(
                (t for t in self.kept if t.shape == obj.shape and t.dtype == obj.dtype and t.device == obj.device
                 and torch.equal(t, obj)),
                None,
            )
            if kept is None:
                self.kept.append(obj)
                kept = obj
            self.seen[id(obj)] = (obj, kept)
            return kept
        if isinstance(obj, (tuple, list)):
            return type(obj)(self.intern(o) for o in obj)
        if isinstance(obj, dict):
            return {k: self.intern(v) for k, v in obj.items()}
        return obj


@dataclass
class LayerArgs:
    """What the model passes to each decoder layer besides the hidden states, per calibration batch.

    per_layer[i][b]: (positional args after the hidden states, kwargs) of layer i for batch b;
    equal tensors are one object (see `_TensorPool`).
    """

    per_layer: list[list[tuple[tuple, dict[str, Any]]]]

    def batches(self, index: int, hidden: list[torch.Tensor]) -> list[LayerInput]:
        """Layer `index`'s calibration batches: the given hidden states [B, T, H] with that layer's own arguments."""
        return [(h, *args) for h, args in zip(hidden, self.per_layer[index], strict=True)]


Captured = tuple[list[torch.Tensor], LayerArgs]  # (first layer's hidden states per batch, every layer's arguments)


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, samples: list[torch.Tensor], batch_size: int) -> Captured:
    """Record what the model itself passes to every decoder layer, without running any layer.

    samples: list of [1, L] input ids (L may vary; equal lengths are batched together).
    Returns the first layer's hidden states [B, L, H] per batch and every layer's arguments.
    During the capture each layer's `forward` is replaced (and restored afterwards) by a
    recorder that keeps its arguments and returns the hidden states unchanged; one model
    call per batch runs the embeddings, masks and rotary embeddings but no layer, and the
    last recorder stops it before the final norm and head. The arguments do not depend on
    the hidden states, so what layer i receives here is what it receives in a real forward.
    Raises ValueError when the model does not feed each layer's output to the next layer
    unchanged (the layer-wise driver could not reproduce its forward).
    """
    layers = get_decoder_layers(model)
    pool = _TensorPool()
    hidden: list[torch.Tensor] = []
    layer_args: list[list[tuple[tuple, dict]]] = [[] for _ in layers]
    handed_on: list[torch.Tensor] = []  # what the previous recorder returned, within one model call

    def recorder(index: int):
        def forward(*args, **kwargs):
            if args:
                states, rest = args[0], tuple(args[1:])
            else:
                states, rest = kwargs.pop("hidden_states"), ()
            if index != len(handed_on) or (index and not (states is handed_on[-1] or torch.equal(states, handed_on[-1]))):
                raise ValueError(
                    f"{type(model).__name__} does not pass each decoder layer's output straight to the next layer "
                    f"(layer {index}); the layer-wise driver cannot prune it"
                )
            if index == 0:
                hidden.append(states)
            layer_args[index].append((pool.intern(rest), pool.intern(dict(kwargs))))
            handed_on.append(states)
            if index == len(layers) - 1:
                raise _StopForward
            return states
        return forward

    originals = [layer.__dict__.get("forward") for layer in layers]
    for i, layer in enumerate(layers):
        layer.forward = recorder(i)
    device = model_device(model)
    try:
        for ids in _length_batches(samples, batch_size):
            handed_on.clear()
            try:
                model(ids.to(device), use_cache=False)
            except _StopForward:
                pass
            pool.seen.clear()
            if len(handed_on) != len(layers):
                raise ValueError(
                    f"{type(model).__name__} called {len(handed_on)} of its {len(layers)} decoder layers; "
                    f"the layer-wise driver cannot prune it"
                )
    finally:
        for layer, original in zip(layers, originals):
            if original is None:
                del layer.forward
            else:
                layer.forward = original
    return hidden, LayerArgs(layer_args)


def layer_device(layer: nn.Module) -> torch.device:
    return next(layer.parameters()).device


@torch.no_grad()
def run_layer(layer: nn.Module, batches: list[LayerInput]) -> list[torch.Tensor]:
    """Forward every batch through one decoder layer; returns the output hidden states [B, T, H] per batch."""
    device = layer_device(layer)
    return [
        hidden_output(layer, layer(hidden.to(device), *to_device(args, device), **to_device(kwargs, device)), hidden)
        for hidden, args, kwargs in batches
    ]


def hidden_output(layer: nn.Module, out: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The hidden states [B, T, H] in a decoder layer's output (a tensor, or the first element of a tuple)."""
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor) or out.shape != hidden.shape:
        raise ValueError(
            f"{type(layer).__name__} returned {type(out).__name__} "
            f"{tuple(getattr(out, 'shape', ()))}, not hidden states of shape {tuple(hidden.shape)}"
        )
    return out
