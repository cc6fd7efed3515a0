"""Rows of the experiment matrix (scripts/run_task_experiments.sh) from the JSON files it leaves under OUT.

Layout read (written by the script):

    OUT/dense/eval.json                      the dense model (no pruning, no fine-tuning)
    OUT/pruned/<tag>/eval.json               a pruned model before fine-tuning
    OUT/pruned/<tag>/results/results.json    its pruning report (calibration data, sparsity)
    OUT/<exp>/eval.json                      a fine-tuned model
    OUT/<exp>/model/finetune_results.json    its fine-tuning report (task, the pruned model it started from)
    OUT/<exp>/model/sparsity.json            the sparsity after fine-tuning
    OUT/markers/<step>.done                  the step's command, then "seconds N"

Every eval.json is a report of scripts/eval_tasks.py: {"metrics": {task: {...}}, "counts": {...},
"settings": {...}}. Fractions stay in [0, 1] here; the table shows them as percentages.
Nothing here prints; `plot_results` writes the one figure it is asked for.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVAL_FILE = "eval.json"
# (task, metric key in the eval report, column header, kind): kind "pct" shows 100 x value
METRICS = (
    ("wikitext2", "ppl", "WikiText2 PPL ↓", "ppl"),
    ("squad", "exact", "SQuAD EM", "pct"),
    ("squad", "f1", "SQuAD F1", "pct"),
    ("gsm8k", "strict_accuracy", "GSM8K acc (strict)", "pct"),
    ("gsm8k", "flexible_accuracy", "GSM8K acc (flex)", "pct"),
    ("boolq", "accuracy", "BoolQ acc", "pct"),
    ("zeroshot", "mean_acc", "Zero-shot mean acc", "pct"),
    ("squad", "answer_nll", "SQuAD NLL ↓", "nll"),
    ("gsm8k", "answer_nll", "GSM8K NLL ↓", "nll"),
)
# what a degenerate model does instead of answering: shown beside the scores, not plotted
BEHAVIOUR = (
    ("squad", "HasAns_f1", "SQuAD F1 answerable", "pct"),
    ("squad", "NoAns_exact", "SQuAD EM unanswerable", "pct"),
    ("squad", "no_answer_rate", "SQuAD no-answer rate", "pct"),
    ("boolq", "yes_rate", "BoolQ yes rate", "pct"),
)
DATA_NAMES = {"wikitext2": "WikiText2", "c4": "C4", "squad": "SQuAD", "gsm8k": "GSM8K", "boolq": "BoolQ",
              "mixed": "mixed"}
CALIBRATION_ORDER = ("wikitext2", "squad", "gsm8k", "wikitext2+squad", "wikitext2+gsm8k")
KIND_ORDER = ("dense", "pruned", "finetuned", "other")


@dataclass
class Row:
    """One evaluated model. `metrics` is {(task, key): value}; `reference` names the pruned row it came from."""

    name: str
    kind: str
    label: str
    calibration: str | None = None
    finetuning: str | None = None
    sparsity: float | None = None
    reference: str | None = None
    metrics: dict[tuple[str, str], float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    missing: bool = False  # an expected row whose eval.json is not there


def data_label(name: str | None) -> str:
    """'wikitext2+squad' -> 'WikiText2 + SQuAD'; 'wikitext2:0.7,gsm8k:0.3' -> 'WikiText2 0.7 + GSM8K 0.3'."""
    if not name:
        return "—"
    parts = [part.partition(":") for part in re.split(r"[+,]", name)]
    return " + ".join(DATA_NAMES.get(source, source) + (f" {share}" if share else "") for source, _, share in parts)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _pruned_info(out: Path, tag: str) -> tuple[str | None, float | None]:
    """(calibration data set, measured sparsity) of OUT/pruned/<tag>, from its pruning report."""
    report = _read(out / "pruned" / tag / "results" / "results.json")
    if report is None:
        return None, None
    return report["args"]["calibration_dataset"], report["sparsity"]["sparsity"]


def _natural_key(name: str) -> tuple:
    return (0, 0, "") if name == "baseline" else (1, int(m.group()) if (m := re.search(r"\d+", name)) else 0, name)


def _finetuned_label(name: str) -> str:
    return "Baseline" if name == "baseline" else re.sub(r"^exp(\d+)$", r"Exp \1", name)


def load_row(out: Path, eval_path: Path) -> Row:
    """The row of one eval.json under `out`, with what its location and the reports beside it say."""
    row = describe_row(out, eval_path.parent)
    report = json.loads(eval_path.read_text())
    for task, metrics in report.get("metrics", {}).items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                row.metrics[(task, key)] = float(value)
    row.counts = report.get("counts", {})
    row.settings = report.get("settings", {})
    return row


def describe_row(out: Path, row_dir: Path) -> Row:
    """A row without metrics: what the location `row_dir` under `out` and the reports there say."""
    parts = row_dir.relative_to(out).parts
    name = "/".join(parts) or "."
    row = Row(name=name, kind="other", label=name)
    if parts == ("dense",):
        row.kind, row.label = "dense", "Dense (no pruning, no FT)"
    elif len(parts) == 2 and parts[0] == "pruned":
        row.kind = "pruned"
        row.calibration, row.sparsity = _pruned_info(out, parts[1])
        row.label = f"Pruned {data_label(row.calibration or parts[1])}, before FT"
    elif len(parts) == 1:
        finetune = _read(row_dir / "model" / "finetune_results.json")
        if finetune is not None:
            row.kind = "finetuned"
            row.label = _finetuned_label(name)
            task = finetune["task"]
            row.finetuning = finetune["data_args"].get("dataset_name", "wikitext2") if task == "lm" else task
            tag = Path(finetune["model_name_or_path"]).parent.name
            row.reference = f"pruned/{tag}"
            row.calibration = _pruned_info(out, tag)[0]
            sparsity = _read(row_dir / "model" / "sparsity.json")
            row.sparsity = sparsity["end"]["sparsity"] if sparsity else None
        elif re.fullmatch(r"baseline|exp\d+", name):
            row.kind, row.label = "finetuned", _finetuned_label(name)
    return row


def load_rows(out: str | Path, expected: list[str] = ()) -> list[Row]:
    """Every eval.json under `out` as a row: dense, pruned (in calibration order), fine-tuned (baseline, exp1, ...).

    `expected` names rows ("dense", "pruned/wikitext2", "exp1") that must appear: one without an
    eval.json is a row with `missing` set and no metrics.
    """
    out = Path(out)
    rows = [load_row(out, path) for path in out.rglob(EVAL_FILE) if "model" not in path.relative_to(out).parts]
    found = {row.name for row in rows}
    for name in expected:
        if name not in found:
            rows.append(describe_row(out, out / name))
            rows[-1].missing = True

    def key(row: Row) -> tuple:
        calibration = row.calibration or ""
        calibration_rank = CALIBRATION_ORDER.index(calibration) if calibration in CALIBRATION_ORDER else len(CALIBRATION_ORDER)
        second = _natural_key(row.name) if row.kind == "finetuned" else (calibration_rank, 0, row.name)
        return (KIND_ORDER.index(row.kind), second)

    return sorted(rows, key=key)


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


def results_table(rows: list[Row]) -> list[str]:
    """The main table: one line per row, the metrics of METRICS that any row has."""
    metrics = [m for m in METRICS if any((m[0], m[1]) in row.metrics for row in rows)]
    header = ["Row", "Calibration", "Fine-tuning", "Sparsity"] + [m[2] for m in metrics]
    lines = []
    for row in rows:
        sparsity = "not pruned" if row.kind == "dense" else ("—" if row.sparsity is None else f"{100 * row.sparsity:.2f}%")
        finetuning = "none" if row.kind in ("dense", "pruned") else data_label(row.finetuning)
        calibration = "none" if row.kind == "dense" else data_label(row.calibration)
        label = f"{row.label} (**no data**)" if row.missing else row.label
        lines.append([label, calibration, finetuning, sparsity]
                     + [format_value(row.metrics.get((task, key)), kind) for task, key, _, kind in metrics])
    return _markdown_table(header, lines)


def behaviour_table(rows: list[Row]) -> list[str]:
    """SQuAD scores split by answerable / unanswerable, the no-answer rate and BoolQ's yes rate, per row."""
    metrics = [m for m in BEHAVIOUR if any((m[0], m[1]) in row.metrics for row in rows)]
    if not metrics:
        return []
    lines = [[row.label] + [format_value(row.metrics.get((task, key)), kind) for task, key, _, kind in metrics]
             for row in rows]
    return _markdown_table(["Row"] + [m[2] for m in metrics], lines)


def change_table(rows: list[Row]) -> list[str]:
    """Each fine-tuned row minus the pruned row it started from (empty when there is none)."""
    by_name = {row.name: row for row in rows}
    pairs = [(row, by_name[row.reference]) for row in rows if row.kind == "finetuned" and row.reference in by_name]
    metrics = [m for m in METRICS if any((m[0], m[1]) in row.metrics for row, _ in pairs)]
    if not pairs:
        return []
    header = ["Row", "Calibration → fine-tuning"] + ["Δ " + m[2] for m in metrics]
    lines = []
    for row, ref in pairs:
        deltas = []
        for task, key, _, kind in metrics:
            a, b = row.metrics.get((task, key)), ref.metrics.get((task, key))
            deltas.append(format_value(None if a is None or b is None else a - b, kind, signed=True))
        lines.append([row.label, f"{data_label(row.calibration)} → {data_label(row.finetuning)}"] + deltas)
    return _markdown_table(header, lines)


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
    for task, name in (("squad", "SQuAD"), ("gsm8k", "GSM8K"), ("boolq", "BoolQ")):
        if task in counts and "total" in counts[task]:
            parts.append(f"{name} n = {counts[task]['total']}")
    if parts:
        notes.append("Evaluated on: " + ", ".join(parts) + ".")
    majority = first.metrics.get(("boolq", "majority_rate"))
    if majority is not None:
        notes.append(f"BoolQ majority-class rate on these examples: {100 * majority:.1f}% (always answering it).")
    new_tokens = first.settings.get("max_new_tokens")
    if new_tokens:
        notes.append(f"Generation capped at max_new_tokens {new_tokens} (defaults: SQuAD 32, GSM8K 256).")
    keys = ("limit", "seqlen", "eval_windows", "max_new_tokens", "num_fewshot", "data_dir")
    differing = sorted({k for row in rows for k in keys if row.settings.get(k) != first.settings.get(k)})
    if differing:
        notes.append(f"**Warning**: rows were evaluated with different settings ({', '.join(differing)}); "
                     "compare them with care.")
    return notes


def step_times(out: str | Path) -> list[tuple[str, int]]:
    """(step, seconds) from the completion markers, in the order the steps finished."""
    markers = sorted(Path(out, "markers").glob("*.done"), key=lambda p: p.stat().st_mtime)
    times = []
    for marker in markers:
        lines = marker.read_text().splitlines()
        if len(lines) > 1 and lines[1].startswith("seconds "):
            times.append((marker.stem, int(lines[1].split()[1])))
    return times


PRUNE_FLAGS = ("--nsamples", "--seqlen", "--sparsity_ratios", "--sparsity_type", "--prune_method")
FINETUNE_FLAGS = ("--num_train_epochs", "--max_steps", "--learning_rate", "--per_device_train_batch_size",
                  "--gradient_accumulation_steps", "--max_length", "--block_size", "--bf16")


def recorded_flags(out: str | Path, prefix: str, flags: tuple[str, ...]) -> str | None:
    """The given flags (with their values) of the first finished step named `prefix`*, from its marker."""
    markers = sorted(Path(out, "markers").glob(f"{prefix}*.done"))
    if not markers:
        return None
    words = shlex.split(markers[0].read_text().splitlines()[0])
    picked = []
    for i, word in enumerate(words):
        if word in flags:
            values = list(itertools.takewhile(lambda w: not w.startswith("--"), words[i + 1:]))  # none for a bare switch
            values = values[:3] if word == "--sparsity_ratios" else values[:1]
            picked.append(" ".join([word, *values]))
    return " ".join(picked)


def results_markdown(rows: list[Row], times: list[tuple[str, int]] = (), out: str | Path | None = None) -> str:
    """results.md: the main table, the change after fine-tuning, evaluation notes and step times."""
    lines = ["# Experiment matrix: calibration data x fine-tuning data", "",
             "SQuAD EM/F1, GSM8K and BoolQ accuracy in %; PPL and task NLLs (mean negative log-likelihood per "
             "token of the gold answer) lower is better. Sparsity: zero weights of the decoder Linear layers.", ""]
    lines += results_table(rows)
    change = change_table(rows)
    if change:
        lines += ["", "## Change after fine-tuning (fine-tuned − the same pruned model before fine-tuning)", ""]
        lines += change
    behaviour = behaviour_table(rows)
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


def plot_results(rows: list[Row], path: str | Path) -> None:
    """Grouped bars per metric: each fine-tuned row next to its pruned model before fine-tuning; dense as a line.

    With no fine-tuned rows, the pruned rows alone.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_name = {row.name: row for row in rows}
    finetuned = [row for row in rows if row.kind == "finetuned"]
    groups = [(row.label, by_name.get(row.reference), row) for row in finetuned] or \
             [(row.label, None, row) for row in rows if row.kind == "pruned"]
    dense = next((row for row in rows if row.kind == "dense"), None)
    metrics = [m for m in METRICS if any((m[0], m[1]) in row.metrics for row in rows)]
    cols = 4
    n_rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.4 * cols, 3.4 * n_rows), squeeze=False)
    x = range(len(groups))
    width = 0.4
    for ax, (task, key, header, kind) in zip(axes.flat, metrics):
        scale = 100 if kind == "pct" else 1
        before = [scale * ref.metrics.get((task, key), float("nan")) if ref else float("nan") for _, ref, _ in groups]
        after = [scale * row.metrics.get((task, key), float("nan")) for _, _, row in groups]
        if finetuned:
            ax.bar([i - width / 2 for i in x], before, width, color="#bdbdbd", label="pruned, before FT")
            ax.bar([i + width / 2 for i in x], after, width, color="#1565c0", label="after FT")
        else:
            ax.bar(list(x), after, width, color="#bdbdbd", label="pruned, before FT")
        if dense is not None and (task, key) in dense.metrics:
            ax.axhline(scale * dense.metrics[(task, key)], color="#c62828", linestyle="--", linewidth=1.2, label="dense")
        ax.set_title(header + (" (%)" if kind == "pct" else ""), fontsize=9)
        ax.set_xticks(list(x))
        ax.set_xticklabels([label for label, _, _ in groups], rotation=45, ha="right", fontsize=7)
        if kind == "ppl":
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle("Calibration data x fine-tuning data (labels: experiment rows)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
