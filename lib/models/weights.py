"""The weight files of a `save_pretrained` directory, checked against its config.json before anything reads
their tensors: every file's header against its size (`lib.core.safetensors_header`), every stored
tensor's shape against the model config.json describes (built on the meta device: no memory for
weights), and no tensor the model needs missing."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lib.core.errors import WeightFileError
from lib.core.safetensors_header import read_header, tensor_shapes

WEIGHTS_FILE = "model.safetensors"


WEIGHTS_INDEX = "model.safetensors.index.json"


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files `from_pretrained` reads from a directory: model.safetensors, else the index's shards."""
    if (model_dir / WEIGHTS_FILE).is_file():
        return [model_dir / WEIGHTS_FILE]
    index = model_dir / WEIGHTS_INDEX
    if not index.is_file():
        return []
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise WeightFileError(f"{index}: damaged shard index ({err.__class__.__name__}: {err})") from None
    missing = [s for s in shards if not (model_dir / s).is_file()]
    if missing:
        raise WeightFileError(f"{index}: names shard {missing[0]}, which is not in {model_dir}; copy the whole directory")
    return [model_dir / s for s in shards]


def config_shapes(config) -> tuple[dict[str, tuple[int, ...]], dict[str, set[str]]]:
    """({state dict name: shape}, {name: the names tied to the same tensor}) of the model `config` describes (meta device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    groups: dict[int, set[str]] = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        groups.setdefault(id(tensor), set()).add(name)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    return shapes, {name: group for group in groups.values() for name in group}


def check_model_weights(model_dir: str | Path) -> None:
    """Check a save_pretrained directory's safetensors files before `from_pretrained` reads them.

    Every file's header against its size (`read_header`); every stored tensor whose name the
    model of config.json has must have its shape; and, when all stored names are the model's
    (no checkpoint renaming in play, as for fused mixture-of-experts tensors), every model
    tensor must be stored (one of a tied group suffices). Raises WeightFileError naming the
    file and the defect. A directory without safetensors files passes (from_pretrained decides).
    """
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    files = weight_files(model_dir)
    stored: dict[str, tuple[Path, list[int]]] = {}
    for path in files:
        stored.update({name: (path, shape) for name, shape in tensor_shapes(read_header(path)).items()})
    if not stored:
        return
    shapes, tied = config_shapes(AutoConfig.from_pretrained(model_dir, trust_remote_code=False))
    for name, (path, shape) in stored.items():
        if name in shapes and tuple(shape) != shapes[name]:
            raise WeightFileError(f"{path}: tensor {name} has shape {tuple(shape)}, but the model of "
                                  f"{model_dir / 'config.json'} needs {shapes[name]}; the weights belong to another config")
    if stored.keys() <= shapes.keys():
        missing = sorted(name for name in shapes if not tied.get(name, {name}) & stored.keys())
        if missing:
            where = files[0] if len(files) == 1 else model_dir / WEIGHTS_INDEX
            raise WeightFileError(f"{where}: lacks {len(missing)} tensors the model of "
                                  f"{model_dir / 'config.json'} needs, e.g. {missing[0]}; copy or save the model again")
