"""The experiment summary (results.md, results.png) from the rows of lib.experiments.rows.

Runs of the same row with different seeds form a `Group`: the tables show mean +- sd over its
seeds. Every difference shown (fine-tuned - pruned, and the COMPARISONS between experiments)
comes with a 95% paired-bootstrap interval over the examples both sides share
(`lib.core.uncertainty.paired_bootstrap`: examples resampled by id, seeds resampled per side), and
the EXPECTATIONS verdicts are read off those intervals. Fractions stay in [0, 1] here; the table
shows them as percentages. Nothing here prints or writes; the figure is `lib.experiments.plots.plot_results`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.core.uncertainty import mean_sd, paired_bootstrap
from lib.eval.report import pairing
from lib.eval.tasks import task as tasks  # torch-free task metadata (until the summary reads the reports' tasks_info)
from lib.experiments.rows import (EVAL_FILE, FINETUNE_FLAGS, Group, PRUNE_FLAGS, Row, data_label, group_rows,
                                  recorded_flags)

BOOTSTRAP_RESAMPLES = 2000
MARK = "*"  # after a difference whose 95% interval excludes 0
KIND_ORDER = ("ppl", "pct", "nll")  # the main table: perplexities, then scores, then answer NLLs


def summary_metrics() -> tuple[tuple[str, str, str, str], ...]:
    """The main table's (task, metric key in the eval report, column header, kind), from the registered
    tasks' and groups' "score" metrics (lib.eval.tasks), ordered by KIND_ORDER (stable); kind "pct" shows
    100 x value."""
    groups = [(name, key, info["display"], info["format"]) for name in tasks.group_names()
              for key, info in tasks.report_info(name, [f"mean_{tasks.group(name).score}"])["metrics"].items()]
    return tuple(sorted(_task_metrics("score") + groups, key=lambda m: KIND_ORDER.index(m[3])))


def behaviour_metrics() -> tuple[tuple[str, str, str, str], ...]:
    """What a degenerate model does instead of answering (the tasks' "behaviour" metrics): shown beside the
    scores, not plotted."""
    return tuple(_task_metrics("behaviour"))


def _task_metrics(role: str) -> list[tuple[str, str, str, str]]:
    """(task, key, header, kind) of every registered task's metric with `role`; "↓" marks lower is better."""
    return [(name, m.key, m.display + ("" if m.higher_is_better else " ↓"), m.format)
            for name in tasks.names() for m in tasks.get(name).metrics if m.role == role]


# (A, B, what A - B asks): differences between experiments shown with their intervals
COMPARISONS = (
    ("exp2", "exp1", "SQuAD vs WikiText2 calibration, both fine-tuned on SQuAD"),
    ("exp5", "exp1", "WikiText2 + SQuAD vs WikiText2 calibration, both fine-tuned on SQuAD"),
    ("exp4", "exp3", "GSM8K vs WikiText2 calibration, both fine-tuned on GSM8K"),
    ("exp6", "exp3", "WikiText2 + GSM8K vs WikiText2 calibration, both fine-tuned on GSM8K"),
    ("pruned/squad", "pruned/wikitext2", "SQuAD vs WikiText2 calibration, before fine-tuning"),
    ("pruned/gsm8k", "pruned/wikitext2", "GSM8K vs WikiText2 calibration, before fine-tuning"),
)
# (statement, A, B, task, metric, expected sign of A - B); A = "*<task>" means every row fine-tuned on
# <task>, compared with the pruned model it started from
EXPECTATIONS = (
    ("fine-tuning on SQuAD lowers the SQuAD answer NLL", "*squad", None, "squad", "answer_nll", -1),
    ("fine-tuning on SQuAD lowers the answer NLL of the answerable SQuAD questions", "*squad", None, "squad",
     "HasAns_answer_nll", -1),
    ("fine-tuning on GSM8K lowers the GSM8K answer NLL", "*gsm8k", None, "gsm8k", "answer_nll", -1),
    ("fine-tuning on WikiText2 lowers WikiText2 perplexity", "*wikitext2", None, "wikitext2", "ppl", -1),
    ("calibrating on SQuAD lowers the SQuAD answer NLL after SQuAD fine-tuning", "exp2", "exp1", "squad", "answer_nll", -1),
    ("calibrating on SQuAD lowers the answer NLL of the answerable SQuAD questions after SQuAD fine-tuning", "exp2",
     "exp1", "squad", "HasAns_answer_nll", -1),
    ("calibrating on WikiText2 + SQuAD lowers the SQuAD answer NLL after SQuAD fine-tuning", "exp5", "exp1", "squad",
     "answer_nll", -1),
    ("calibrating on GSM8K lowers the GSM8K answer NLL after GSM8K fine-tuning", "exp4", "exp3", "gsm8k", "answer_nll", -1),
    ("calibrating on WikiText2 + GSM8K lowers the GSM8K answer NLL after GSM8K fine-tuning", "exp6", "exp3", "gsm8k",
     "answer_nll", -1),
    ("calibrating on SQuAD lowers the SQuAD answer NLL of the pruned model", "pruned/squad", "pruned/wikitext2", "squad",
     "answer_nll", -1),
    ("calibrating on SQuAD lowers the answer NLL of the answerable SQuAD questions of the pruned model", "pruned/squad",
     "pruned/wikitext2", "squad", "HasAns_answer_nll", -1),
    ("calibrating on GSM8K lowers the GSM8K answer NLL of the pruned model", "pruned/gsm8k", "pruned/wikitext2", "gsm8k",
     "answer_nll", -1),
    ("calibrating on SQuAD costs WikiText2 perplexity", "pruned/squad", "pruned/wikitext2", "wikitext2", "ppl", +1),
    ("calibrating on GSM8K costs WikiText2 perplexity", "pruned/gsm8k", "pruned/wikitext2", "wikitext2", "ppl", +1),
)


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
    return f"{value:{sign}.2f}"


def _markdown_table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in lines]


def present_metrics(groups: list[Group], table: tuple) -> list[tuple]:
    """The metrics of `table` that some group has values of."""
    return [m for m in table if any(g.values(m[0], m[1]) for g in groups)]


def results_table(groups: list[Group]) -> list[str]:
    """The main table: one line per row (mean ± sd over seeds), the summary_metrics() that any row has."""
    metrics = present_metrics(groups, summary_metrics())
    seeded = any(len(g.runs) > 1 for g in groups)
    header = ["Row", "Calibration", "Fine-tuning", "Sparsity"] + (["Seeds"] if seeded else []) + [m[2] for m in metrics]
    lines = []
    for group in groups:
        sparsity = "not pruned" if group.kind == "dense" else ("—" if group.sparsity is None else f"{100 * group.sparsity:.2f}%")
        finetuning = "none" if group.kind in ("dense", "pruned") else data_label(group.finetuning)
        calibration = "none" if group.kind == "dense" else data_label(group.calibration)
        seeds = [" ".join(map(str, group.seeds)) if group.kind != "dense" else "—"] if seeded else []
        label = f"{group.label} (**no data**)" if group.missing else group.label
        lines.append([label, calibration, finetuning, sparsity] + seeds
                     + [format_group_value(group, task, key, kind) for task, key, _, kind in metrics])
    return _markdown_table(header, lines)


def behaviour_table(groups: list[Group]) -> list[str]:
    """SQuAD scores split by answerable / unanswerable, the no-answer rate and BoolQ's yes rate, per row."""
    metrics = present_metrics(groups, behaviour_metrics())
    if not metrics:
        return []
    lines = [[g.label] + [format_group_value(g, task, key, kind) for task, key, _, kind in metrics] for g in groups]
    return _markdown_table(["Row"] + [m[2] for m in metrics], lines)


def _difference_table(pairs: list[tuple[Group, Group, list[str]]], first_header: list[str]) -> list[str]:
    """One line per (A, B, leading cells): A − B with its interval for every metric either side has."""
    metrics = present_metrics([g for a, b, _ in pairs for g in (a, b)], summary_metrics())
    lines = [cells + [format_difference(difference(a, b, task, key), kind) for task, key, _, kind in metrics]
             for a, b, cells in pairs]
    return _markdown_table(first_header + ["Δ " + m[2] for m in metrics], lines)


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
    """The COMPARISONS whose two rows are present: A − B with 95% intervals."""
    by_name = {g.name: g for g in groups}
    pairs = [(by_name[a], by_name[b], [f"{by_name[a].label} − {by_name[b].label}", what])
             for a, b, what in COMPARISONS if a in by_name and b in by_name]
    return _difference_table(pairs, ["A − B", "Question"]) if pairs else []


def verdict(result: dict | None, sign: int) -> str:
    """'supported' / 'contradicted' (the interval excludes 0 on the expected / other side) / 'not established'."""
    if result is None or result["low"] is None:
        return "not established (no per-example values)" if result else "not measured"
    if result["significant"]:
        return "supported" if np.sign(result["difference"]) == sign else "contradicted"
    return "not established (the interval covers 0)"


def expectation_lines(groups: list[Group]) -> list[str]:
    """One line per EXPECTATIONS entry whose rows are present, its verdict read off the 95% interval."""
    by_name = {g.name: g for g in groups}
    main = {(task, key): kind for task, key, _, kind in summary_metrics()}
    kinds = main | {(task, key): kind for task, key, _, kind in behaviour_metrics()}
    lines = []
    for statement, a, b, task, key, sign in EXPECTATIONS:
        if a.startswith("*"):
            pairs = [(g, ref) for g, ref in fine_tuning_pairs(groups) if g.finetuning == a[1:]]
        else:
            pairs = [(by_name[a], by_name[b])] if a in by_name and b in by_name else []
        for group_a, group_b in pairs:
            result = difference(group_a, group_b, task, key)
            if result is None and (task, key) not in main:
                continue  # a behaviour metric that reports written before it existed lack
            shown = format_difference(result, kinds[(task, key)])
            lines.append(f"{statement} ({group_a.label} − {group_b.label}: {shown}): **{verdict(result, sign)}**")
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
    counts = first.counts
    parts = []
    if "wikitext2" in counts:
        c = counts["wikitext2"]
        parts.append(f"WikiText2 {c['n_windows']} windows x {c['seqlen']} tokens")
    for task in tasks.names():
        if task in counts and "total" in counts[task]:
            c = counts[task]
            nll = f" (answer NLL: {c['answer_total']})" if c.get("answer_total", c["total"]) != c["total"] else ""
            parts.append(f"{tasks.get(task).display} n = {c['total']}{nll}")
    if parts:
        notes.append("Evaluated on: " + ", ".join(parts) + ".")
    majority = first.metrics.get(("boolq", "majority_rate"))
    if majority is not None:
        notes.append(f"BoolQ majority-class rate on these examples: {100 * majority:.1f}% (always answering it).")
    new_tokens = first.settings.get("max_new_tokens")
    if new_tokens:
        generating = [tasks.get(name) for name in tasks.names("generate")]
        defaults = ", ".join(f"{task.display} {task.max_new_tokens}" for task in generating)
        notes.append(f"Generation capped at max_new_tokens {new_tokens} (defaults: {defaults}).")
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
             "SQuAD EM/F1, GSM8K and BoolQ accuracy in %; PPL and task NLLs (mean negative log-likelihood per "
             "token of the gold answer) lower is better. Sparsity: zero weights of the decoder Linear layers."
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
        for prefix, flags, what in (("prune_", PRUNE_FLAGS, "Pruning"), ("ft_", FINETUNE_FLAGS, "Fine-tuning")):
            recorded = recorded_flags(out, prefix, flags)
            if recorded:
                notes.append(f"{what}: `{recorded}`.")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    if times:
        lines += ["", f"## Step wall times (total {sum(s for _, s in times) / 60:.1f} min)", ""]
        lines += _markdown_table(["step", "seconds"], [[step, str(seconds)] for step, seconds in times])
    return "\n".join(lines) + "\n"
