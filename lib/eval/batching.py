"""Batches of sequences: sorted by length, longest first, sized by rows or by padded tokens.

Pure index arithmetic (no torch): a batch is a list of input indices; whoever runs the batches writes
each result back at its index, so results come out in input order whatever the batching.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_BATCH_TOKENS = 4096  # padded tokens per scoring forward (rows x the longest row)
MIN_FILL = 0.9  # a row shares a batch only with rows at most 1 / MIN_FILL times its length: under 10% padding


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices longest first; equal lengths keep input order (stable)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def row_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of `batch_size` rows of similar length, longest first (least padding; OOM shows up early)."""
    if batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1, got {batch_size}")
    order = length_order(lengths)
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def token_batches(lengths: Sequence[int], batch_tokens: int, min_fill: float = MIN_FILL) -> list[list[int]]:
    """Indices in batches whose padded size (rows x longest row) stays within `batch_tokens`, longest first.

    A row joins the current batch only while it is at least `min_fill` of the batch's longest row, so
    padding stays under 1 - min_fill of every batch; a sequence longer than the budget is a batch of its
    own. So a batch of short questions holds many rows and a batch of long passages few: each costs about
    what its tokens cost.
    """
    if batch_tokens < 1:
        raise ValueError(f"--batch_tokens must be at least 1, got {batch_tokens}")
    batches: list[list[int]] = []
    for index in length_order(lengths):
        longest = lengths[batches[-1][0]] if batches else 0  # the batch's first row is its longest
        if batches and (len(batches[-1]) + 1) * longest <= batch_tokens and lengths[index] >= min_fill * longest:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches
