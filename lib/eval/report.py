"""The layout of a task report, shared by every evaluator and the experiment summary.

A task evaluation returns {"metrics", "counts", "per_example", "samples"}. Beside every metric
`m` stands `m_stderr`, the sample standard error (ddof = 1) of the mean of its per-example
values (`lib.core.uncertainty`); `per_example[m]` keeps those values as {example id: value} (the
example's own "id" when it has one, else its index in the eval split; perplexity: the window
index), so two reports over the same examples can be paired. No models here, no torch.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from lib.core.uncertainty import mean_stderr

# how a metric's per-example values pair up: the key holding its values, the key of their weights,
# and whether the metric is exp(mean) of them (perplexity from window NLLs)
PAIRING = {"ppl": ("nll", None, True)} | {
    key: (key, "answer_tokens", False) for key in ("answer_nll", "HasAns_answer_nll", "NoAns_answer_nll")
}


def pairing(metric: str) -> tuple[str, str | None, bool]:
    """(per-example key, weights key or None, exp of the mean?) of `metric` (see PAIRING)."""
    return PAIRING.get(metric, (metric, None, False))


def with_stderr(metrics: dict, per_example: dict[str, dict[str, float]]) -> dict:
    """`metrics` with `m_stderr` right after every metric m that has per-example values."""
    out = {}
    for key, value in metrics.items():
        out[key] = value
        values_key, weights_key, _ = pairing(key)
        if key != "ppl" and values_key in per_example:
            values = per_example[values_key]
            weights = [per_example[weights_key][i] for i in values] if weights_key else None
            out[key + "_stderr"] = mean_stderr(list(values.values()), weights)
    return out


def by_id(ids: Sequence[str], values: Iterable) -> dict[str, float]:
    """{id: float(value)} in the order of `ids`."""
    return {i: float(v) for i, v in zip(ids, values)}


def example_ids(examples: Sequence[dict]) -> list[str]:
    """The pairing key of each example: its "id" when it has one, else its index in the eval split."""
    return [str(ex["id"]) if ex.get("id") is not None else str(i) for i, ex in enumerate(examples)]


def require_examples(task: str, examples: Sequence[dict]) -> None:
    """Raise a one-line ValueError when there is nothing to evaluate."""
    if not examples:
        raise ValueError(f"no {task} examples to evaluate; check --data_dir and --limit")
