"""Continuation log-likelihoods, one forward per shared context, in batches sized by tokens.

A request is (prompt, continuation): the prompt is tokenized with special tokens, the continuation
without, and log p(continuation | prompt) is summed over the continuation's tokens. Requests whose
(truncated) prompt tokens are equal form a group, scored in one packed row:

    row      = context + cont_1[:-1] + cont_2[:-1] + ... + cont_K[:-1]
    position = 0 .. L-1, then L .. L+len(cont_i)-2 for each continuation (each restarts after the context)
    attends  = the context (causally) and the earlier tokens of its own continuation

Token j of continuation i is predicted at the context's last position (j = 0) or at its own token
j - 1, exactly as in the row context + cont_i; a continuation's last token is never an input. When every
continuation is one token (BoolQ's " no" / " yes") the row is the context alone and all choices are read
from its last position. A request alone (an answer NLL, a WinoGrande choice) is the plain row context +
continuation, as the scorer before packing ran it (the same values, bit for bit, where the batch's padding
takes the same attention path). Only the scored positions go through the output head (lib.eval.scoring).

Rows are right padded; a batch without packed rows passes the usual [B, T] padding mask (the model builds
its causal mask), a batch with packed rows a [B, 1, T, T] block mask (`block_attention_mask`). Batches are
length-sorted and sized by padded tokens, under 10% padding (lib.eval.batching.token_batches); results
come back in input order.
Models whose attention cannot take such a mask (not sdpa / eager, sliding windows, no position_ids) score
every request as its own row. Letters: B batch, T padded row length, L context length, K requests.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from lib.eval.batching import DEFAULT_BATCH_TOKENS, token_batches
from lib.eval.generation import eos_token_ids, max_context, truncate_left
from lib.eval.scoring import score_tokens
from lib.models.arch import model_device

logger = logging.getLogger(__name__)

PACKED_ATTENTION = ("sdpa", "eager")  # attention implementations that take a custom 4D mask


@dataclass
class Row:
    """One packed row: ids / positions / segments (0 the context, i + 1 the i-th packed continuation), and per
    request it scores (request index, row positions that predict its tokens, its token ids)."""

    ids: list[int]
    positions: list[int]
    segments: list[int]
    scored: list[tuple[int, list[int], list[int]]] = field(default_factory=list)


def pack_rows(sequences: Sequence[tuple[list[int], list[int]]], pack: bool = True) -> list[Row]:
    """(prompt ids, continuation ids) per request -> rows; with `pack`, one row per distinct prompt.

    Rows come in order of each prompt's first request; a request is scored in exactly one row.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (prompt, _) in enumerate(sequences):
        groups.setdefault(tuple(prompt) if pack else (index,), []).append(index)
    rows = []
    for members in groups.values():
        context = sequences[members[0]][0]
        if len(members) == 1:  # the plain row context + continuation (an answer NLL, a WinoGrande choice)
            target = sequences[members[0]][1]
            ids = context + target
            rows.append(Row(ids, list(range(len(ids))), [0] * len(ids),
                            [(members[0], list(range(len(context) - 1, len(ids) - 1)), target)]))
            continue
        row = Row(list(context), list(range(len(context))), [0] * len(context))
        for segment, index in enumerate(members, start=1):
            target = sequences[index][1]
            start = len(row.ids)
            row.ids += target[:-1]
            row.positions += range(len(context), len(context) + len(target) - 1)
            row.segments += [segment] * (len(target) - 1)
            row.scored.append((index, [len(context) - 1, *range(start, start + len(target) - 1)], target))
        rows.append(row)
    return rows


def block_attention_mask(segments: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Which keys each query attends in right-padded packed rows.

    segments: long [B, T] (0 the shared context, s > 0 a continuation, padding any value); valid: bool [B, T].
    Returns bool [B, 1, T, T]: key k <= query q, k not padding, and k in the context or in q's own segment.
    """
    t = segments.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()  # (T, T)
    same = (segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None])  # (B, T, T): [b, q, k]
    return (causal & same & valid[:, None, :])[:, None]  # (B, 1, T, T)


def can_pack(model: nn.Module) -> bool:
    """Whether the model takes a custom 4D mask with explicit positions (else each request is its own row)."""
    config = model.config
    return (getattr(config, "_attn_implementation", None) in PACKED_ATTENTION
            and "sliding_attention" not in (getattr(config, "layer_types", None) or ())
            and "position_ids" in inspect.signature(model.base_model.forward).parameters)


def _model_mask(mask: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """A bool [B, 1, T, T] mask as the attention implementation reads it: bool for sdpa, additive for eager."""
    if model.config._attn_implementation == "sdpa":
        return mask
    dtype = next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


@torch.no_grad()
def _forward_rows(model: nn.Module, rows: Sequence[Row], pad_id: int, device: torch.device) -> torch.Tensor:
    """The decoder's final hidden states of right-padded `rows`: [B, T, H]."""
    width = max(len(row.ids) for row in rows)
    pad = [width - len(row.ids) for row in rows]
    input_ids = torch.tensor([row.ids + [pad_id] * n for row, n in zip(rows, pad)], device=device)  # (B, T)
    valid = torch.tensor([[True] * len(row.ids) + [False] * n for row, n in zip(rows, pad)], device=device)  # (B, T)
    if all(max(row.segments) == 0 for row in rows):  # no packed continuation: the model's own causal mask
        return model.base_model(input_ids=input_ids, attention_mask=valid.long(), use_cache=False)[0]
    positions = torch.tensor([row.positions + [0] * n for row, n in zip(rows, pad)], device=device)  # (B, T)
    segments = torch.tensor([row.segments + [-1] * n for row, n in zip(rows, pad)], device=device)  # (B, T)
    mask = _model_mask(block_attention_mask(segments, valid), model)
    return model.base_model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False)[0]


@torch.no_grad()
def score_rows(model: nn.Module, rows: Sequence[Row], n_requests: int, pad_id: int,
               batch_tokens: int = DEFAULT_BATCH_TOKENS, progress: bool = True) -> list[dict]:
    """Run `rows` in token-sized batches; per request {"logprob", "n_tokens", "greedy"} in request order."""
    device = model_device(model)
    results: list[dict] = [{}] * n_requests
    for batch in tqdm(token_batches([len(row.ids) for row in rows], batch_tokens), desc="log-likelihood",
                      disable=not progress, unit="batch"):
        hidden = _forward_rows(model, [rows[i] for i in batch], pad_id, device)  # (B, T, H)
        requests, batch_rows, positions, targets = [], [], [], []
        for b, row_index in enumerate(batch):
            for index, row_positions, target in rows[row_index].scored:
                requests.append((index, len(target)))
                batch_rows += [b] * len(target)
                positions += row_positions
                targets += target
        logprob, greedy = score_tokens(model, hidden[batch_rows, positions], torch.tensor(targets, device=device))  # (n,)
        lengths = [n for _, n in requests]
        for (index, n_tokens), lp, gr in zip(requests, logprob.split(lengths), greedy.split(lengths)):
            results[index] = {"logprob": lp.sum().item(), "n_tokens": n_tokens, "greedy": bool(gr.all())}
    return results


def continuation_logprobs(model: nn.Module, tokenizer, prompts: Sequence[str], continuations: Sequence[str],
                          batch_tokens: int = DEFAULT_BATCH_TOKENS, progress: bool = True) -> list[dict]:
    """Log-likelihood of each continuation given its prompt, summed over the continuation's tokens.

    The prompt is tokenized with special tokens, the continuation without, and the two id lists are
    concatenated (the layout fine-tuning uses); when they exceed the model's context the prompt loses its
    first tokens. Requests with equal prompt tokens share one forward (module docstring).

    Args:
        prompts, continuations: N strings each; continuation i follows prompt i.
        batch_tokens: padded tokens per forward (rows x longest row; a longer row runs alone).
    Returns:
        N dicts in input order {"logprob": float (sum of log p over continuation tokens, <= 0),
        "n_tokens": int, "greedy": bool (every continuation token is the argmax)}.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    context = max_context(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_token_ids(model, tokenizer)[0]
    sequences, n_truncated, prompt_ids = [], 0, {}
    for prompt, continuation in zip(prompts, continuations):
        target = tokenizer(continuation, add_special_tokens=False).input_ids
        if not target:
            raise ValueError(f"continuation {continuation!r} tokenizes to nothing")
        if prompt not in prompt_ids:  # a shared prompt is tokenized once
            prompt_ids[prompt] = tokenizer(prompt).input_ids
        ids, truncated = truncate_left(prompt_ids[prompt], None if context is None else context - len(target))
        if not ids:
            raise ValueError(f"prompt {prompt[:40]!r} tokenizes to nothing; the first continuation token needs a context")
        sequences.append((ids, target))
        n_truncated += truncated
    if n_truncated:
        logger.warning("%d of %d prompts exceed the context of %s tokens; kept their last tokens", n_truncated, len(prompts), context)
    rows = pack_rows(sequences, pack=can_pack(model))
    return score_rows(model, rows, len(sequences), pad_id, batch_tokens, progress)
