"""Perplexity by the Wanda protocol: non-overlapping windows over one tokenized test text."""

from __future__ import annotations

import math

import torch
from torch import nn
from tqdm.auto import tqdm

from lib.models import model_device


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
        {"ppl", "nll", "seqlen", "n_windows", "n_tokens", "window_nll"}; n_tokens counts predicted
        tokens, (seqlen - 1) per window; window_nll lists each window's mean token NLL in window order
        (all windows have the same token count, so their mean is `nll`).
    """
    n_windows = input_ids.shape[1] // seqlen
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows == 0:
        raise ValueError(f"the test text has {input_ids.shape[1]} tokens, fewer than one window of --seqlen {seqlen}")
    device = model_device(model)
    windows = input_ids[0, : n_windows * seqlen].view(n_windows, seqlen)  # (N, T)
    window_nll: list[float] = []
    for start in tqdm(range(0, n_windows, batch_size), desc="perplexity", disable=not progress, unit="batch"):
        batch = windows[start : start + batch_size].to(device)  # (B, T)
        logits = model(batch).logits.float()  # (B, T, V)
        loss = nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
        )  # (B * (T - 1),)
        window_nll += loss.view(batch.shape[0], -1).double().mean(1).tolist()
    n_tokens = n_windows * (seqlen - 1)
    nll = sum(window_nll) / n_windows
    return {"ppl": math.exp(nll), "nll": nll, "seqlen": seqlen, "n_windows": n_windows, "n_tokens": n_tokens,
            "window_nll": window_nll}
