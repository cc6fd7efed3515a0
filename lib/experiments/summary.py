"""The experiment summary (results.md, results.png) from the rows of lib.experiments.rows.

Runs of the same row with different seeds form a `Group`: the tables show mean +- sd over its
seeds. Every difference shown (fine-tuned - pruned, and the design's COMPARISONS between rows)
comes with a 95% paired-bootstrap interval over the examples both sides share
(`lib.core.uncertainty.paired_bootstrap`: examples resampled by id, seeds resampled per side), and
the design's EXPECTATIONS verdicts are read off those intervals. Which metrics are shown, and how, comes from
the reports themselves (their `tasks_info`: display name, format, higher_is_better, role): the main table shows
the "score" metrics, the behaviour table the "behaviour" ones. Fractions stay in [0, 1] here; the table shows
them as percentages. Nothing here prints or writes; the figure is `lib.experiments.plots.plot_results`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.core.uncertainty import mean_sd, paired_bootstrap
from lib.eval.report import pairing
from lib.experiments.design import COMPARISONS, EXPECTATIONS
from lib.experiments.layout import EVAL_FILE
from lib.experiments.rows import RECORDED, Group, Row, data_label, group_rows, recorded_flags

BOOTSTRAP_RESAMPLES = 2000
MARK = "*"  # after a difference whose 95% interval excludes 0
FORMAT_ORDER = ("ppl", "pct", "nll", "count")  # the main table: perplexities, then scores, then answer NLLs
LOWER = " ↓"  # after the header of a metric where lower is better


@dataclass(frozen=True)
class MetricInfo:
    """One metric as a report's tasks_info describes it: task, key, column header, format, role."""

    task: str
    key: str
    header: str
    format: str
    role: str


def metric_infos(rows: list[Row]) -> list[MetricInfo]:
    """Every metric the rows' reports describe, once, in the order the reports first list them."""
    found: dict[tuple[str, str], MetricInfo] = {}
    for row in rows:
        for task, info in (row.tasks_info or {}).items():
            for key, meta in info.get("metrics", {}).items():
                header = meta["display"] + ("" if meta["higher_is_better"] or meta["display"].endswith(LOWER.strip())
                                            else LOWER)
                found.setdefault((task, key), MetricInfo(task, key, header, meta["format"], meta["role"]))
    return list(found.values())


def summary_metrics(rows: list[Row]) -> list[MetricInfo]:
    """The main table's metrics (role "score"), ordered by FORMAT_ORDER (stable)."""
    scores = [m for m in metric_infos(rows) if m.role == "score"]
    return sorted(scores, key=lambda m: FORMAT_ORDER.index(m.format) if m.format in FORMAT_ORDER else len(FORMAT_ORDER))


def behaviour_metrics(rows: list[Row]) -> list[MetricInfo]:
    """What a degenerate model does instead of answering (role "behaviour"): shown beside the scores, not plotted."""
    return [m for m in metric_infos(rows) if m.role == "behaviour"]


def difference(a: Group, b: Group, task: str, key: str) -> dict | None:
    """metric(a) - metric(b) with its 95% paired-bootstrap interval over their shared examples.

    Returns {"difference", "low", "high", "n", "significant"}; without per-example values (reports
    written before they were kept) only "difference" (low/high None); None when a side lacks the metric.
    """
    if not a.values(task, key) or not b.values(task, key):
        return None
    values_key, weights_key, is_exp = pairing(key)
    runs_a = [run.per_example.get(task, {}).get(values_key) for run in a.runs]
    runs_b = [run.per_example.get(task, {}).get(values_key) for run in b.runs]
    point = a.mean(task, key) - b.mean(task, key)
    if not all(runs_a) or not all(runs_b):
        return {"difference": point, "low": None, "high": None, "n": None, "significant": False}
    weights = a.runs[0].per_example[task].get(weights_key) if weights_key else None
    return paired_bootstrap(runs_a, runs_b, weights=weights, transform=np.exp if is_exp else None,
                            n_resamples=BOOTSTRAP_RESAMPLES)


def format_difference(result: dict | None, kind: str) -> str:
    """'+12.5 [+3.1, +21.9] *' (the mark when the interval excludes 0); '—' for no result."""
    if result is None:
        return "—"
    text = format_value(result["difference"], kind, signed=True)
    if result["low"] is None:
        return text + " [no per-example values]"
    text += f" [{format_value(result['low'], kind, signed=True)}, {format_value(result['high'], kind, signed=True)}]"
    return text + (f" {MARK}" if result["significant"] else "")


def format_group_value(group: Group, task: str, key: str, kind: str) -> str:
    """One run: its value; several seeds: 'mean ± sd'."""
    values = group.values(task, key)
    if not values:
        return "—"
    mean, sd = mean_sd(values)
    if sd is None:
        return format_value(mean, kind)
    return f"{format_value(mean, kind)} ± {format_value(sd, kind)}"


def format_value(value: float | None, kind: str, signed: bool = False) -> str:
    if value is None:
        return "—"
    sign = "+" if signed else ""
    if kind == "pct":
        return f"{100 * value:{sign}.1f}"
    if kind == "nll":
        return f"{value:{sign}.3f}"
    if kind == "count":
        return f"{value:{sign}g}"
    return f"{value:{sign}.2f}"


def _markdown_table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in lines]


def runs(groups: list[Group]) -> list[Row]:
    return [run for group in groups for run in group.runs]


def present_metrics(groups: list[Group], metrics: list[MetricInfo]) -> list[MetricInfo]:
    """The `metrics` that some group has values of."""
    return [m for m in metrics if any(g.values(m.task, m.key) for g in groups)]


def results_table(groups: list[Group]) -> list[str]:
    """The main table: one line per row (mean ± sd over seeds), the summary_metrics that any row has."""
    metrics = present_metrics(groups, summary_metrics(runs(groups)))
    seeded = any(len(g.runs) > 1 for g in groups)
    header = ["Row", "Calibration", "Fine-tuning", "Sparsity"] + (["Seeds"] if seeded else []) + [m.header for m in metrics]
    lines = []
    for group in groups:
        sparsity = "not pruned" if group.kind == "dense" else ("—" if group.sparsity is None else f"{100 * group.sparsity:.2f}%")
        finetuning = "none" if group.kind in ("dense", "pruned") else data_label(group.finetuning)
        calibration = "none" if group.kind == "dense" else data_label(group.calibration)
        seeds = [" ".join(map(str, group.seeds)) if group.kind != "dense" else "—"] if seeded else []
        label = f"{group.label} (**no data**)" if group.missing else group.label
        lines.append([label, calibration, finetuning, sparsity] + seeds
                     + [format_group_value(group, m.task, m.key, m.format) for m in metrics])
    return _markdown_table(header, lines)


def behaviour_table(groups: list[Group]) -> list[str]:
    """The behaviour metrics per row (SQuAD split by answerability, no-answer rate, BoolQ's yes rate, ...)."""
    metrics = present_metrics(groups, behaviour_metrics(runs(groups)))
    if not metrics:
        return []
    lines = [[g.label] + [format_group_value(g, m.task, m.key, m.format) for m in metrics] for g in groups]
    return _markdown_table(["Row"] + [m.header for m in metrics], lines)


def _difference_table(pairs: list[tuple[Group, Group, list[str]]], first_header: list[str]) -> list[str]:
    """One line per (A, B, leading cells): A − B with its interval for every metric either side has."""
    groups = [g for a, b, _ in pairs for g in (a, b)]
    metrics = present_metrics(groups, summary_metrics(runs(groups)))
    lines = [cells + [format_difference(difference(a, b, m.task, m.key), m.format) for m in metrics]
             for a, b, cells in pairs]
    return _markdown_table(first_header + ["Δ " + m.header for m in metrics], lines)


def fine_tuning_pairs(groups: list[Group]) -> list[tuple[Group, Group]]:
    """(fine-tuned group, the pruned group it started from, restricted to the fine-tuned seeds) for every
    fine-tuned row whose reference is there: with FT_SEEDS=0, seed 0's fine-tune minus seed 0's pruned model."""
    by_name = {g.name: g for g in groups}
    pairs = []
    for group in groups:
        if group.kind == "finetuned" and group.reference in by_name:
            runs = [run for run in by_name[group.reference].runs if run.seed in group.seeds]
            if runs:
                pairs.append((group, Group(runs)))
    return pairs


def change_table(groups: list[Group]) -> list[str]:
    """Each fine-tuned row minus the pruned row it started from, with 95% intervals (empty when there is none)."""
    pairs = [(g, ref, [g.label, f"{data_label(g.calibration)} → {data_label(g.finetuning)}"])
             for g, ref in fine_tuning_pairs(groups)]
    return _difference_table(pairs, ["Row", "Calibration → fine-tuning"]) if pairs else []


def comparison_table(groups: list[Group]) -> list[str]:
    """The design's COMPARISONS whose two rows are present: A − B with 95% intervals."""
    by_name = {g.name: g for g in groups}
    pairs = [(by_name[c.a], by_name[c.b], [f"{by_name[c.a].label} − {by_name[c.b].label}", c.question])
             for c in COMPARISONS if c.a in by_name and c.b in by_name]
    return _difference_table(pairs, ["A − B", "Question"]) if pairs else []


def verdict(result: dict | None, sign: int) -> str:
    """'supported' / 'contradicted' (the interval excludes 0 on the expected / other side) / 'not established'."""
    if result is None or result["low"] is None:
        return "not established (no per-example values)" if result else "not measured"
    if result["significant"]:
        return "supported" if np.sign(result["difference"]) == sign else "contradicted"
    return "not established (the interval covers 0)"


def expectation_lines(groups: list[Group]) -> list[str]:
    """One line per EXPECTATIONS entry whose rows are present and whose metric the reports describe, its verdict
    read off the 95% interval (a score metric a row lacks: "not measured"; a behaviour one: no line)."""
    by_name = {g.name: g for g in groups}
    infos = {(m.task, m.key): m for m in metric_infos(runs(groups))}
    lines = []
    for e in EXPECTATIONS:
        info = infos.get((e.task, e.metric))
        if info is None:
            continue
        if e.finetuned_on is not None:
            pairs = [(g, ref) for g, ref in fine_tuning_pairs(groups) if g.finetuning == e.finetuned_on]
        else:
            pairs = [(by_name[e.rows[0]], by_name[e.rows[1]])] if all(row in by_name for row in e.rows) else []
        for group_a, group_b in pairs:
            result = difference(group_a, group_b, e.task, e.metric)
            if result is None and info.role != "score":
                continue  # a behaviour metric that reports written before it existed lack
            shown = format_difference(result, info.format)
            lines.append(f"{e.statement} ({group_a.label} − {group_b.label}: {shown}): **{verdict(result, e.sign)}**")
    return lines


def settings_notes(rows: list[Row]) -> list[str]:
    """What the numbers rest on: examples per task, perplexity windows, generation lengths; mismatches flagged."""
    notes = []
    missing = [row for row in rows if row.missing]
    if missing:
        notes.append("**No data** for " + ", ".join(f"{row.label} (no {row.name}/{EVAL_FILE})" for row in missing)
                     + ": rerun scripts/run_task_experiments.sh with the same OUT to redo those steps.")
    rows = [row for row in rows if not row.missing]
    if not rows:
        return notes
    first = rows[0]
    parts, majority, new_tokens = [], [], []
    for task, info in first.tasks_info.items():
        c, display = first.counts.get(task, {}), info["display"]
        if info.get("output_type") == "perplexity" and "n_windows" in c:
            parts.append(f"{display} {c['n_windows']} windows x {c['seqlen']} tokens")
        elif "total" in c:
            nll = f" (answer NLL: {c['answer_total']})" if c.get("answer_total", c["total"]) != c["total"] else ""
            parts.append(f"{display} n = {c['total']}{nll}")
        if "max_new_tokens" in c:
            new_tokens.append(f"{display} {c['max_new_tokens']}")
        if (task, "majority_rate") in first.metrics:
            majority.append(f"{display} majority-class rate on these examples: "
                            f"{100 * first.metrics[(task, 'majority_rate')]:.1f}% (always answering it).")
    if parts:
        notes.append("Evaluated on: " + ", ".join(parts) + ".")
    notes += majority
    if first.settings.get("max_new_tokens"):
        notes.append(f"Generation capped at max_new_tokens {first.settings['max_new_tokens']}"
                     + (f" ({', '.join(new_tokens)})." if new_tokens else "."))
    keys = ("limit", "nll_limit", "seqlen", "eval_windows", "max_new_tokens", "num_fewshot", "data_dir")
    differing = sorted({k for row in rows for k in keys if row.settings.get(k) != first.settings.get(k)})
    if differing:
        notes.append(f"**Warning**: rows were evaluated with different settings ({', '.join(differing)}); "
                     "compare them with care.")
    return notes


def results_markdown(rows: list[Row], times: list[tuple[str, int]] = (), out: str | Path | None = None) -> str:
    """results.md: the main table, the changes with their intervals, the verdicts, notes and step times."""
    groups = group_rows(rows)
    seeded = any(len(g.runs) > 1 for g in groups)
    lines = ["# Experiment matrix: calibration data x fine-tuning data", "",
             "Accuracies, EM, F1 and rates in %; ↓: lower is better (PPL; task NLLs: mean negative log-likelihood "
             "per token of the gold answer). Sparsity: zero weights of the decoder Linear layers."
             + (" Rows with several calibration seeds show mean ± sd over the seeds (Seeds column)." if seeded else ""),
             "",
             f"Differences: A − B [95% paired-bootstrap interval: {BOOTSTRAP_RESAMPLES} resamples of the examples both "
             "rows were evaluated on, paired by example id / PPL window"
             + (", calibration seeds resampled per row" if seeded else "")
             + f"]; `{MARK}` marks an interval that excludes 0. A difference without the mark is not established.", ""]
    pruned_seeds = sorted({seed for g in groups if g.kind == "pruned" for seed in g.seeds})
    finetuned_seeds = sorted({seed for g in groups if g.kind == "finetuned" for seed in g.seeds})
    if finetuned_seeds and len(finetuned_seeds) < len(pruned_seeds):
        lines += [f"Pruned rows: calibration seeds {' '.join(map(str, pruned_seeds))}; fine-tuned rows: seed "
                  f"{' '.join(map(str, finetuned_seeds))} only (FT_SEEDS), so their spread over seeds is not measured: "
                  "their intervals are paired over examples, and each fine-tune is compared with the pruned model "
                  "of its own seed.", ""]
    lines += results_table(groups)
    change = change_table(groups)
    if change:
        lines += ["", "## Change after fine-tuning (fine-tuned − the same pruned model before fine-tuning)", ""]
        lines += change
    comparison = comparison_table(groups)
    if comparison:
        lines += ["", "## Comparisons between experiments (A − B)", ""]
        lines += comparison
    expectations = expectation_lines(groups)
    if expectations:
        lines += ["", "## Which expectations the numbers support (generated from the 95% intervals above)", ""]
        lines += [f"- {line}" for line in expectations]
    behaviour = behaviour_table(groups)
    if behaviour:
        lines += ["", "## Answer behaviour (a model that always says \"no answer\" or \"yes\" scores without reading)",
                  ""]
        lines += behaviour
    notes = settings_notes(rows)
    if out is not None:
        for prefix, flags, what in RECORDED:
            recorded = recorded_flags(out, prefix, flags)
            if recorded:
                notes.append(f"{what}: `{recorded}`.")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    if times:
        lines += ["", f"## Step wall times (total {sum(s for _, s in times) / 60:.1f} min)", ""]
        lines += _markdown_table(["step", "seconds"], [[step, str(seconds)] for step, seconds in times])
    return "\n".join(lines) + "\n"
