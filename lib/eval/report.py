"""The layout of a task report, shared by every runner and the experiment summary.

A task evaluation returns {"metrics", "counts", "per_example", "samples"}. Beside every metric
`m` stands `m_stderr`, the sample standard error (ddof = 1) of the mean of its per-example
values (`lib.core.uncertainty`); `per_example[m]` keeps those values as {example id: value} (the
example's own "id" when it has one, else its index in the eval split; perplexity: the window
index), so two reports over the same examples can be paired. A group's report (`group_report`)
holds its members' metrics as `<task>_<metric>` and their means. No models here, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

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


@dataclass(frozen=True)
class AnswerNLL:
    """The gold answers' negative log-likelihood after their prompts (lib.eval.generate.answer_nll).

    examples: the scored examples. nll: token-weighted mean over all of them (sum of -log p / n_tokens).
    per_example: each answer's NLL per token. tokens: each answer's token count.
    """

    examples: Sequence[dict]
    nll: float
    n_tokens: int
    per_example: list[float]
    tokens: list[int]

    @property
    def ids(self) -> list[str]:
        return example_ids(self.examples)

    def values(self) -> dict[str, dict[str, float]]:
        """{"answer_nll": {id: NLL per token}, "answer_tokens": {id: tokens}}: the per-example values."""
        return {"answer_nll": by_id(self.ids, self.per_example), "answer_tokens": by_id(self.ids, self.tokens)}

    def counts(self) -> dict[str, int]:
        return {"answer_total": len(self.examples), "answer_tokens": self.n_tokens}


def suite_mean(task_metrics: Mapping[str, Mapping[str, float]], metric: str = "acc") -> dict[str, float]:
    """The papers' suite average: the unweighted mean over tasks, stderr = sqrt(sum se^2) / K."""
    values = [m[metric] for m in task_metrics.values()]
    errors = [m[f"{metric}_stderr"] for m in task_metrics.values()]
    k = len(values)
    stderr = None if None in errors else math.sqrt(sum(e * e for e in errors)) / k
    return {f"mean_{metric}": sum(values) / k, f"mean_{metric}_stderr": stderr}


def group_report(metrics: Sequence[str], reports: Mapping[str, dict]) -> dict:
    """The report of a group from its members' reports ({task: report}), for the member `metrics`.

    Returns:
        {"metrics": {"<task>_<m>", "<task>_<m>_stderr" for every task and m, then "mean_<m>",
        "mean_<m>_stderr"}, "counts": {task: n examples}, "per_example": {"<task>_<m>": {id: value}},
        "samples": {task: its samples}}.
    """
    kept = set(metrics) | {f"{m}_stderr" for m in metrics}
    flat = {f"{name}_{key}": value for name, report in reports.items()
            for key, value in report["metrics"].items() if key in kept}
    for metric in metrics:
        flat.update(suite_mean({name: report["metrics"] for name, report in reports.items()}, metric))
    return {
        "metrics": flat,
        "counts": {name: report["counts"]["total"] for name, report in reports.items()},
        "per_example": {f"{name}_{m}": report["per_example"][m] for name, report in reports.items() for m in metrics},
        "samples": {name: report["samples"] for name, report in reports.items()},
    }
