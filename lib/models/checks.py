"""What is checked about a model before and right after it loads: its directory (no code from it), that it
is a causal decoder, and --seqlen against its positions. Each failure is one line naming the model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from lib.core.cli import one_line
from lib.core.errors import ModelLoadError
from lib.models.arch import model_device

logger = logging.getLogger(__name__)


def read_json_file(path: Path, name: str) -> dict:
    """The JSON object in `path` (a model directory's config); one-line ModelLoadError naming it when it is not one."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"model {name}: {path} is unreadable ({err.__class__.__name__}: {one_line(err)})") from err
    if not isinstance(value, dict):
        raise ModelLoadError(f"model {name}: {path} holds a JSON {type(value).__name__}, not an object")
    return value


def check_model_dir(path: Path, name: str) -> dict:
    """config.json of the local model directory `path`, refused (one line, nothing run) when it needs code.

    This toolkit never runs code from a model directory (every transformers call passes
    trust_remote_code=False, and nothing reads stdin): a config.json or tokenizer_config.json with
    `auto_map`, a model_type this transformers version does not know, or one without a causal-LM
    class is a ModelLoadError naming the model. Returns the parsed config.json.
    """
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = read_json_file(path / "config.json", name)
    for file in ("config.json", "tokenizer_config.json"):
        values = config if file == "config.json" else (
            read_json_file(path / file, name) if (path / file).is_file() else {})
        if values.get("auto_map"):
            classes = ", ".join(values["auto_map"]) if isinstance(values["auto_map"], dict) else str(values["auto_map"])
            raise ModelLoadError(
                f"model {name} needs code from its own directory ({file} auto_map: {classes}); this toolkit never "
                "runs code from a model directory: use a model whose architecture transformers itself implements")
    model_type = config.get("model_type")
    if model_type is not None and model_type not in CONFIG_MAPPING:
        raise ModelLoadError(
            f"model {name} has model_type {model_type!r}, which transformers does not implement (it would need code "
            "from the model directory, and this toolkit never runs code from a model directory)")
    if model_type is not None and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(f"model {name} (model_type {model_type!r}) has no causal-LM class in transformers; "
                             "this toolkit prunes decoder-only causal language models (see 'Supported models' in the README)")
    return config


CAUSAL_PROBE_TOKENS = 16  # two probe sequences share their first half


CAUSAL_TOLERANCE = 1e-5  # of the largest probe logit


@torch.no_grad()
def check_causal(model: nn.Module, name: str) -> None:
    """Raise ModelLoadError unless `model` is a causal decoder, by a probe that reads no config flag.

    Two random sequences [2, L] (L = 16, or max_position_embeddings when smaller) share their first
    L // 2 tokens; a causal LM gives the same logits at those positions (within CAUSAL_TOLERANCE of
    the largest logit; in practice bit-identical), a bidirectional model (BERT without is_decoder,
    an encoder) does not. Non-finite probe logits are refused too. Cost: one forward of 2 x L tokens.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    length = min(CAUSAL_PROBE_TOKENS, limit) if isinstance(limit, int) and limit >= 2 else CAUSAL_PROBE_TOKENS
    shared = length // 2
    ids = torch.randint(0, model.get_input_embeddings().num_embeddings, (2, length),
                        generator=torch.Generator().manual_seed(0))
    ids[1, :shared] = ids[0, :shared]
    logits = model(input_ids=ids.to(model_device(model))).logits.float()  # (2, L, V)
    if not torch.isfinite(logits).all():
        raise ModelLoadError(f"model {name} gives non-finite logits (NaN or inf) on a probe of {length} tokens; "
                             "its weights are damaged or overflow in this --dtype")
    change = (logits[0, :shared] - logits[1, :shared]).abs().max().item()
    if change > CAUSAL_TOLERANCE * logits.abs().max().item():
        raise ModelLoadError(
            f"model {name} ({type(model).__name__}) is not a causal decoder: its predictions at a position change "
            f"with later tokens (by {change:.3g}); this toolkit prunes and scores decoder-only causal LMs only "
            "(see 'Supported models' in the README)")


def check_seqlen(seqlen: int) -> None:
    """A window must hold at least two tokens: one to predict from, one to predict."""
    if seqlen < 2:
        raise ValueError(f"--seqlen must be at least 2 tokens, got {seqlen}")


def check_seqlen_fits(seqlen: int, limit: int | None, name: str) -> None:
    """Raise ValueError when an explicit --seqlen exceeds the model's max_position_embeddings `limit`."""
    check_seqlen(seqlen)
    if isinstance(limit, int) and seqlen > limit:
        raise ValueError(f"--seqlen {seqlen} exceeds max_position_embeddings {limit} of model {name}; "
                         f"pass --seqlen {limit} or less")


def effective_seqlen(model: nn.Module, seqlen: int, explicit: bool = False) -> int:
    """`seqlen` checked against the model's max_position_embeddings (never defaulted to it).

    An explicit --seqlen above the limit is a ValueError (`check_seqlen_fits`); the default is capped
    at the limit with a warning.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    if explicit:
        check_seqlen_fits(seqlen, limit, getattr(model.config, "name_or_path", "") or type(model).__name__)
        return seqlen
    check_seqlen(seqlen)
    if isinstance(limit, int) and seqlen > limit:
        logger.warning("the default --seqlen %d exceeds max_position_embeddings %d; using %d", seqlen, limit, limit)
        return limit
    return seqlen


def given_seqlen(args, default: int) -> bool:
    """Whether --seqlen was given (a parser default of None); fills `args.seqlen` with `default` when not."""
    explicit = args.seqlen is not None
    args.seqlen = args.seqlen if explicit else default
    return explicit
