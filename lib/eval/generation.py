"""Batched greedy generation for task evaluation (continuation log-likelihoods: lib.eval.loglikelihood).

Letters: B = batch size, T = padded prompt length, V = vocabulary size.

Generation is our own argmax loop over the model's KV cache rather than
`model.generate`, so that a checkpoint's generation_config (sampling settings,
repetition penalties) can never change what "greedy" means. Prompts are left
padded with an attention mask and explicit position ids, so a batched prompt sees
exactly the positions it would see alone: batched output equals one-at-a-time
output up to floating-point ties.
"""

from __future__ import annotations

import inspect
import logging
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from lib.eval.batching import row_batches
from lib.models.arch import model_device

logger = logging.getLogger(__name__)


def eos_token_ids(model: nn.Module, tokenizer) -> list[int]:
    """Token ids that end generation: the tokenizer's EOS plus the model's generation_config EOS ids."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    config = getattr(model, "generation_config", None)
    extra = getattr(config, "eos_token_id", None) if config is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(extra)
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation_config defines an EOS token")
    return sorted(ids)


def max_context(model: nn.Module) -> int | None:
    """The model's max_position_embeddings, or None when the config does not state one."""
    return getattr(model.config, "max_position_embeddings", None)


def truncate_left(ids: list[int], budget: int | None) -> tuple[list[int], bool]:
    """Keep the last `budget` tokens (the question and answer cue sit at the end of every prompt)."""
    if budget is None or len(ids) <= budget:
        return ids, False
    return ids[-budget:], True


def _cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    cut = min((pos for pos in (text.find(stop) for stop in stop_strings) if pos >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _encode_prompts(model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int
                    ) -> tuple[list[list[int]], torch.Tensor, int]:
    """(prompt ids, each keeping its last tokens within the context less `max_new_tokens`; EOS ids (long [E]); pad id)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    eos = torch.tensor(eos_token_ids(model, tokenizer), device=model_device(model))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(eos[0])
    context = max_context(model)
    if context is not None and context <= max_new_tokens:
        raise ValueError(
            f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's context of {context} "
            f"tokens; lower --max_new_tokens"
        )
    budget = None if context is None else context - max_new_tokens
    encoded, n_truncated = [], 0
    for prompt in prompts:
        ids, truncated = truncate_left(tokenizer(prompt).input_ids, budget)
        encoded.append(ids)
        n_truncated += truncated
    if n_truncated:
        logger.warning("%d of %d prompts exceed the context of %s tokens; kept their last %s tokens", n_truncated, len(prompts), context, budget)
    return encoded, eos, pad_id


def _left_padded(rows: Sequence[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both long [B, T]: the rows left padded to the longest."""
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(row)) + row for row in rows], device=device)  # (B, T)
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], device=device)  # (B, T)
    return input_ids, attention_mask


@torch.no_grad()
def generate_greedy(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    stop_strings: Sequence[str] = (),
    batch_size: int = 8,
    progress: bool = True,
) -> list[str]:
    """Greedy continuations of `prompts`, each cut before its first stop string and at EOS.

    Args:
        prompts: N prompt strings, tokenized with the tokenizer's special tokens (BOS if it adds one);
            a prompt longer than the model's context minus `max_new_tokens` keeps its last tokens.
        max_new_tokens: at most this many generated tokens per prompt.
        stop_strings: the continuation ends before the first occurrence of any of these (e.g. "\\n").
        batch_size: prompts per batch (length-sorted, left padded); a row leaves its batch when it ends.
    Returns:
        N strings: the decoded continuations without special tokens and without the stop string.
    """
    encoded, eos, pad_id = _encode_prompts(model, tokenizer, prompts, max_new_tokens)
    outputs: list[str] = [""] * len(prompts)
    for batch in tqdm(row_batches([len(ids) for ids in encoded], batch_size), desc="generate", disable=not progress,
                      unit="batch"):
        input_ids, attention_mask = _left_padded([encoded[i] for i in batch], pad_id, eos.device)
        new_tokens = _greedy_loop(model, input_ids, attention_mask, eos, pad_id, max_new_tokens, tokenizer, stop_strings)
        for row, index in enumerate(batch):
            outputs[index] = _decode(new_tokens[row], eos, tokenizer, stop_strings)
    return outputs


@torch.no_grad()
def reference_generate(model: nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int,
                       stop_strings: Sequence[str] = (), batch_size: int = 8) -> list[str]:
    """transformers' `generate` (greedy, a fresh GenerationConfig: no checkpoint sampling settings) on the batches
    `generate_greedy` runs, its outputs cut the same way: what `generate_greedy` is checked and timed against."""
    from transformers import GenerationConfig

    encoded, eos, pad_id = _encode_prompts(model, tokenizer, prompts, max_new_tokens)
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=eos.tolist(),
                              pad_token_id=pad_id, stop_strings=list(stop_strings) or None)
    outputs: list[str] = [""] * len(prompts)
    for batch in row_batches([len(ids) for ids in encoded], batch_size):
        input_ids, attention_mask = _left_padded([encoded[i] for i in batch], pad_id, eos.device)
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                             tokenizer=tokenizer if stop_strings else None)
        for row, index in enumerate(batch):
            outputs[index] = _decode(out[row, input_ids.shape[1]:], eos, tokenizer, stop_strings)
    return outputs


def _greedy_loop(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    eos: torch.Tensor,
    pad_id: int,
    max_new_tokens: int,
    tokenizer,
    stop_strings: Sequence[str],
) -> torch.Tensor:
    """Argmax decoding with a KV cache; returns the (B, <= max_new_tokens) generated ids, pad after the end.

    A row that reaches EOS or a stop string leaves the batch (and the cache) at once, so the remaining
    steps cost only the rows still generating; the head runs on each row's last position only.
    """
    cache_kwarg = _cache_kwarg(model)
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    generated = torch.full((input_ids.shape[0], max_new_tokens), pad_id, dtype=input_ids.dtype, device=input_ids.device)
    active = torch.arange(input_ids.shape[0], device=input_ids.device)  # rows still generating, (A,)
    past = None
    step_ids = input_ids
    for step in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                    **{cache_kwarg: past}, **last_only)
        past = getattr(out, cache_kwarg)
        next_ids = out.logits[:, -1].argmax(-1)  # (A,)
        generated[active, step] = next_ids
        finished = torch.isin(next_ids, eos)  # (A,)
        if stop_strings:
            finished |= _has_stop_string(generated[active, : step + 1], finished, tokenizer, stop_strings)
        if finished.all() or step + 1 == max_new_tokens:
            return generated[:, : step + 1]
        if finished.any():
            keep = (~finished).nonzero().flatten()  # (A',)
            past.batch_select_indices(keep)
            active, next_ids = active[keep], next_ids[keep]
            attention_mask, position_ids = attention_mask[keep], position_ids[keep]
        step_ids = next_ids[:, None]  # (A, 1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(step_ids)], dim=1)
        position_ids = position_ids[:, -1:] + 1
    return generated


def _cache_kwarg(model: nn.Module) -> str:
    """Name of the KV-cache argument and output field: `cache` in newer transformers 5.x, else `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _has_stop_string(generated: torch.Tensor, finished: torch.Tensor, tokenizer, stop_strings: Sequence[str]) -> torch.Tensor:
    """(B,) bool: rows not yet finished whose decoded continuation already contains a stop string."""
    hits = torch.zeros_like(finished)
    for row in (~finished).nonzero().flatten().tolist():
        text = tokenizer.decode(generated[row], skip_special_tokens=True)
        hits[row] = any(stop in text for stop in stop_strings)
    return hits


def _decode(ids: torch.Tensor, eos: torch.Tensor, tokenizer, stop_strings: Sequence[str]) -> str:
    is_eos = torch.isin(ids, eos).nonzero()
    if len(is_eos):
        ids = ids[: int(is_eos[0])]
    text, _ = _cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stop_strings)
    return text
