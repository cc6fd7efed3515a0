"""The perplexity runner: Wanda's protocol, non-overlapping windows over one tokenized test text.

A perplexity task (lib.eval.tasks.text) names a text dataset; its evaluation text is the data registry's
(`lib.data.get_eval_tokens`). The report's per-example values are the windows' mean NLLs
(`per_example["nll"]`, keyed by window index); `ppl_stderr` is ppl * nll_stderr (delta method) and
`ppl_ci95_low` / `ppl_ci95_high` are exp(nll -+ 1.96 se).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from tqdm.auto import tqdm

from lib.core.uncertainty import mean_stderr, ppl_interval
from lib.data.calibration import get_eval_tokens
from lib.eval.report import by_id
from lib.eval.scoring import final_hidden_states, score_tokens
from lib.models.arch import model_device

logger = logging.getLogger(__name__)


def window_count(n_tokens: int, seqlen: int, max_windows: int | None = None, text: str = "the test text") -> int:
    """Non-overlapping `seqlen` windows evaluated in `n_tokens` tokens: all, or the first `max_windows`.

    Raises ValueError naming `text` when not one window fits; a `max_windows` above what the text
    holds logs one warning with the cap.
    """
    available = n_tokens // seqlen
    if available == 0:
        raise ValueError(f"{text} has {n_tokens} tokens, fewer than one window of --seqlen {seqlen}; "
                         "use a smaller --seqlen or a longer evaluation text")
    if max_windows is not None and max_windows > available:
        logger.warning("--eval_windows %d exceeds the %d windows of %d tokens in %s; using %d",
                       max_windows, available, seqlen, text, available)
    return available if max_windows is None else min(available, max_windows)


@torch.no_grad()
def perplexity(
    model: nn.Module,
    input_ids: torch.Tensor,
    seqlen: int,
    max_windows: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
) -> dict:
    """Mean token NLL over non-overlapping `seqlen` windows of `input_ids`, as perplexity.

    Args:
        input_ids: [1, T] LongTensor, the whole test text tokenized once.
        seqlen: window length; the trailing partial window is dropped (Wanda).
        max_windows: evaluate only the first N windows (None = all).
    Returns:
        {"ppl", "nll", "seqlen", "n_windows", "n_tokens", "window_nll"}; n_tokens counts
        predicted tokens, (seqlen - 1) per window; window_nll: each window's mean token NLL,
        in window order. Logits are computed a chunk of positions at a time (lib.eval.scoring).
    """
    n_windows = window_count(input_ids.shape[1], seqlen, max_windows)
    device = model_device(model)
    windows = input_ids[0, : n_windows * seqlen].view(n_windows, seqlen)  # (N, T)
    window_sums = []
    for start in tqdm(range(0, n_windows, batch_size), desc="perplexity", disable=not progress, unit="batch"):
        batch = windows[start : start + batch_size].to(device)  # (B, T)
        hidden = final_hidden_states(model, batch)[:, :-1]  # (B, T-1, H): position t predicts token t+1
        logprob, _ = score_tokens(model, hidden.reshape(-1, hidden.shape[-1]), batch[:, 1:].reshape(-1))  # (B*(T-1),)
        window_sums.append(-logprob.view(batch.shape[0], -1).double().sum(1))  # (B,)
    sums = torch.cat(window_sums).cpu()  # (N,) float64
    n_tokens = n_windows * (seqlen - 1)
    nll = sums.sum().item() / n_tokens
    return {
        "ppl": math.exp(nll), "nll": nll, "seqlen": seqlen, "n_windows": n_windows, "n_tokens": n_tokens,
        "window_nll": (sums / (seqlen - 1)).tolist(),
    }


def perplexity_tokens(tokenizer, name: str, seqlen: int, data_dir=None, max_windows: int | None = None,
                      text: str | None = None) -> tuple[torch.Tensor, int]:
    """(the tokenized `name` test text [1, T], the number of `seqlen` windows evaluated); a text without
    one window is a ValueError naming `text` (default: the dataset)."""
    input_ids = get_eval_tokens(name, tokenizer, data_dir=data_dir, seqlen=seqlen)  # (1, T)
    return input_ids, window_count(input_ids.shape[1], seqlen, max_windows, text or f"the {name} evaluation text")


def evaluate_perplexity(
    model: nn.Module, tokenizer, name: str, seqlen: int, data_dir=None, max_windows: int | None = None,
    progress: bool = True, tokens: tuple[torch.Tensor, int] | None = None,
) -> dict:
    """Wanda-protocol token perplexity (`perplexity`) on the test text of text dataset `name`.

    `tokens`: what `perplexity_tokens` returned, when already computed.
    Returns:
        {"metrics": {"ppl", "ppl_stderr", "ppl_ci95_low", "ppl_ci95_high", "nll", "nll_stderr"},
        "counts", "per_example": {"nll": {window index: mean NLL of the window}}, "samples": None}.
    """
    input_ids, n_windows = tokens or perplexity_tokens(tokenizer, name, seqlen, data_dir, max_windows)
    return perplexity_report(perplexity(model, input_ids, seqlen, max_windows=n_windows, progress=progress))


def perplexity_report(result: dict) -> dict:
    """The task report of a `perplexity` result: metrics with stderr, interval, per-window NLLs."""
    window_nll = result["window_nll"]
    per_example = {"nll": by_id([str(i) for i in range(len(window_nll))], window_nll)}
    nll_stderr = mean_stderr(window_nll)
    interval = ppl_interval(window_nll)
    metrics = {
        "ppl": result["ppl"],
        "ppl_stderr": None if nll_stderr is None else result["ppl"] * nll_stderr,
        "ppl_ci95_low": None if interval is None else interval[0],
        "ppl_ci95_high": None if interval is None else interval[1],
        "nll": result["nll"],
        "nll_stderr": nll_stderr,
    }
    counts = {"n_windows": result["n_windows"], "n_tokens": result["n_tokens"], "seqlen": result["seqlen"]}
    return {"metrics": metrics, "counts": counts, "per_example": per_example, "samples": None}
