"""TRANSITIONAL: `tasks_info` for evaluation reports written before reports carried it, from the metric tables
that lib.data.registry holds until issue 21's phase B1 moves them into the evaluation tasks.

Every report of scripts/eval_tasks.py gets a top-level `tasks_info` ({task: {display, output_type, metrics: {key:
{display, higher_is_better, format, role}}}}, RESTRUCTURE.md); the summary reads only that. Until the evaluation
writes it, `legacy_tasks_info` derives the same structure from the registry's `summary_metrics` (role "score") and
`behaviour` (role "behaviour"), so reports of today's eval_tasks.py can be summarized. Once the registry no
longer describes metrics it returns None, and a report without `tasks_info` is an error naming the file (re-run
its evaluation): delete this module and its one call in lib.experiments.rows then.
"""

from __future__ import annotations

from lib.data import registry

# the zero-shot suite's mean accuracy (lib.eval.tasks.zeroshot.SUITE), which no dataset spec describes
SUITE_INFO = {"zeroshot": {"display": "Zero-shot", "output_type": "group", "metrics": {
    "mean_acc": {"display": "Zero-shot mean acc", "higher_is_better": True, "format": "pct", "role": "score"}}}}
LOWER_IS_BETTER = ("nll", "ppl")


def _metric(metric: registry.Metric, role: str) -> dict:
    return {"display": metric.header.removesuffix(" ↓"), "higher_is_better": metric.kind not in LOWER_IS_BETTER,
            "format": metric.kind, "role": role}


def legacy_tasks_info(report: dict) -> dict | None:
    """The `tasks_info` of a report's tasks (those the registry or the zero-shot suite describe), or None when the
    registry no longer describes metrics."""
    if not hasattr(registry.DatasetSpec, "summary_metrics"):
        return None
    info = {}
    for task in report.get("metrics", {}):
        if task in SUITE_INFO:
            info[task] = SUITE_INFO[task]
        elif task in registry.DATASETS:
            spec = registry.get(task)
            output_type = ("perplexity" if spec.kind == "text" else
                           "generate" if spec.max_new_tokens is not None else "multiple_choice")
            metrics = {m.key: _metric(m, "behaviour") for m in spec.behaviour}  # one role a key: score wins
            metrics |= {m.key: _metric(m, "score") for m in spec.summary_metrics}
            info[task] = {"display": spec.display, "output_type": output_type, "metrics": metrics}
    return info
