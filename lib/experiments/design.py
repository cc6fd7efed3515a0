"""The experiment design, defined once: the rows of the matrix, the presets, and the comparisons and expectations
the summary judges.

A row prunes (calibrates) with one data set and fine-tunes on another. A calibration is a
`--calibration_dataset` value ("wikitext2+squad" mixes two sources); the fine-tune data is a task of dense_ft/
("squad", "gsm8k") or a text corpus ("wikitext2": dense_ft/finetune_lm.py). Adding a row is one line in
EXPERIMENTS. Comparisons and expectations name rows as the summary does ("exp2", or `pruned("squad")` for the
model pruned with SQuAD before fine-tuning); every name is checked against the rows when this module is imported.
The runner (lib.experiments.runner) reads the rows and presets, the summary (lib.experiments.summary) the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lib.experiments.layout import DENSE_ROW, pruned_row


@dataclass(frozen=True)
class Experiment:
    name: str          # directory under OUT and the EXPS name
    calibration: str   # --calibration_dataset of the pruning step
    finetune: str      # fine-tuning data: squad, gsm8k or wikitext2 (causal LM)
    label: str         # the row's name in results.md


EXPERIMENTS = (
    Experiment("baseline", "wikitext2", "wikitext2", "Baseline"),
    Experiment("exp1", "wikitext2", "squad", "Exp 1"),
    Experiment("exp2", "squad", "squad", "Exp 2"),
    Experiment("exp3", "wikitext2", "gsm8k", "Exp 3"),
    Experiment("exp4", "gsm8k", "gsm8k", "Exp 4"),
    Experiment("exp5", "wikitext2+squad", "squad", "Exp 5"),
    Experiment("exp6", "wikitext2+gsm8k", "gsm8k", "Exp 6"),
)


def calibration_order(experiments: Sequence[Experiment]) -> tuple[str, ...]:
    """Each calibration of `experiments` once, in the order the rows first use it (the pruned rows of results.md)."""
    return tuple(dict.fromkeys(experiment.calibration for experiment in experiments))


BY_NAME = {experiment.name: experiment for experiment in EXPERIMENTS}
CALIBRATION_ORDER = calibration_order(EXPERIMENTS)
FINETUNE_DATA = tuple(dict.fromkeys(experiment.finetune for experiment in EXPERIMENTS))


def pruned(calibration: str) -> str:
    """The row name of the (seed 0) model pruned with `calibration`, before fine-tuning: 'pruned/<tag>'."""
    return pruned_row(calibration)


def table() -> str:
    """The matrix as an aligned text table (the runner's --help)."""
    lines = [f"  {'row':<10}{'prune (calibrate) with':<25}fine-tune on"]
    lines += [f"  {e.name:<10}{e.calibration:<25}{e.finetune}" for e in EXPERIMENTS]
    return "\n".join(lines)


# ---------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """Values of the runner's settings (by environment variable name) that a flag or the environment may override;
    `environment`: variables exported to every step unless already set."""

    about: str
    values: dict[str, str]
    environment: dict[str, str] = field(default_factory=dict)


_CPU_FINETUNE = {"FT_LR": "1e-4", "FT_BATCH_SIZE": "4", "FT_GRAD_ACCUM": "1", "FT_MAX_LENGTH": "384",
                 "FT_BLOCK_SIZE": "256"}
# idle OpenMP threads sleep instead of spinning: on a shared, oversubscribed CPU spinning made a forward pass ~6x slower
_PASSIVE_THREADS = {"OMP_WAIT_POLICY": "PASSIVE"}
PRESETS = {
    "cpu-smoke": Preset(
        "the default model, the whole matrix in < 60 min on 2 CPU cores: measured alone on 2 cores, an evaluation "
        "~2.5 min, a fine-tune ~2 min, a pruning ~0.5 min; 13 + 7 + 5 of them ~50 min",
        {"NSAMPLES": "8", "SEQLEN": "256", "FT_MAX_STEPS": "8", **_CPU_FINETUNE, "FT_SAVE_STEPS": "5",
         "FT_LOGGING_STEPS": "2", "EVAL_WINDOWS": "8", "EVAL_LIMITS": "squad=32 gsm8k=16 boolq=48",
         "EVAL_MAX_NEW_TOKENS": "squad=16 gsm8k=48", "EVAL_BATCH_SIZE": "16"},
        _PASSIVE_THREADS),
    "cpu": Preset(
        "the default model with sizes that can show real effects (issue 11): answer NLL on 500 SQuAD / 300 GSM8K "
        "examples, generation on 200 / 100, BoolQ 500, PPL 64 x 512, 3 calibration seeds (pruned rows; fine-tunes "
        "on seed 0, compared by paired intervals). One evaluation at these sizes costs ~21 CPU-minutes, so the "
        "preset runs the SQuAD question (exp1, exp2: 9 evaluations, est. 2.5-3.5 h on 2 cores); --exps \"exp1 exp2 "
        "exp3 exp4\" adds GSM8K later (resumes). FT_MAX_STEPS 60: where the measured SQuAD eval loss flattens",
        {"EXPS": "exp1 exp2", "NSAMPLES": "32", "SEQLEN": "512", "SEEDS": "0 1 2", "FT_SEEDS": "0",
         "FT_MAX_STEPS": "60", **_CPU_FINETUNE, "FT_SAVE_STEPS": "20", "FT_LOGGING_STEPS": "10",
         "EVAL_WINDOWS": "64", "EVAL_SEQLEN": "512", "EVAL_LIMITS": "squad=200 gsm8k=100 boolq=500",
         "EVAL_NLL_LIMITS": "squad=500 gsm8k=300", "EVAL_MAX_NEW_TOKENS": "squad=16 gsm8k=48", "EVAL_BATCH_SIZE": "16"},
        _PASSIVE_THREADS),
    "paper": Preset(
        "the design notes: Llama-2-7b, nsamples 128, seqlen 2048, 3 epochs, lr 2e-5, bf16, full evaluation",
        {"MODEL": "meta-llama/Llama-2-7b-hf", "NSAMPLES": "128", "SEQLEN": "2048", "FT_EPOCHS": "3", "FT_LR": "2e-5",
         "FT_BF16": "1", "FT_ARGS": "--gradient_checkpointing", "EVAL_DTYPE": "bfloat16"}),
}


# ---------------------------------------------------------------- what the summary compares and judges


@dataclass(frozen=True)
class Comparison:
    """A - B between two rows (with its interval), and the question it answers."""

    a: str
    b: str
    question: str


@dataclass(frozen=True)
class Expectation:
    """`statement` holds when metric(a) - metric(b) of `task`, for `rows` = (a, b), has the sign `sign` with a 95%
    interval excluding 0. `finetuned_on`: instead of `rows`, every row fine-tuned on that data against the pruned
    model it started from."""

    statement: str
    task: str
    metric: str
    sign: int
    rows: tuple[str, str] | None = None
    finetuned_on: str | None = None


COMPARISONS = (
    Comparison("exp2", "exp1", "SQuAD vs WikiText2 calibration, both fine-tuned on SQuAD"),
    Comparison("exp5", "exp1", "WikiText2 + SQuAD vs WikiText2 calibration, both fine-tuned on SQuAD"),
    Comparison("exp4", "exp3", "GSM8K vs WikiText2 calibration, both fine-tuned on GSM8K"),
    Comparison("exp6", "exp3", "WikiText2 + GSM8K vs WikiText2 calibration, both fine-tuned on GSM8K"),
    Comparison(pruned("squad"), pruned("wikitext2"), "SQuAD vs WikiText2 calibration, before fine-tuning"),
    Comparison(pruned("gsm8k"), pruned("wikitext2"), "GSM8K vs WikiText2 calibration, before fine-tuning"),
)
_ANSWERABLE = "the answer NLL of the answerable SQuAD questions"
EXPECTATIONS = (
    Expectation("fine-tuning on SQuAD lowers the SQuAD answer NLL", "squad", "answer_nll", -1, finetuned_on="squad"),
    Expectation(f"fine-tuning on SQuAD lowers {_ANSWERABLE}", "squad", "HasAns_answer_nll", -1, finetuned_on="squad"),
    Expectation("fine-tuning on GSM8K lowers the GSM8K answer NLL", "gsm8k", "answer_nll", -1, finetuned_on="gsm8k"),
    Expectation("fine-tuning on WikiText2 lowers WikiText2 perplexity", "wikitext2", "ppl", -1, finetuned_on="wikitext2"),
    Expectation("calibrating on SQuAD lowers the SQuAD answer NLL after SQuAD fine-tuning", "squad", "answer_nll", -1,
                ("exp2", "exp1")),
    Expectation(f"calibrating on SQuAD lowers {_ANSWERABLE} after SQuAD fine-tuning", "squad", "HasAns_answer_nll", -1,
                ("exp2", "exp1")),
    Expectation("calibrating on WikiText2 + SQuAD lowers the SQuAD answer NLL after SQuAD fine-tuning", "squad",
                "answer_nll", -1, ("exp5", "exp1")),
    Expectation("calibrating on GSM8K lowers the GSM8K answer NLL after GSM8K fine-tuning", "gsm8k", "answer_nll", -1,
                ("exp4", "exp3")),
    Expectation("calibrating on WikiText2 + GSM8K lowers the GSM8K answer NLL after GSM8K fine-tuning", "gsm8k",
                "answer_nll", -1, ("exp6", "exp3")),
    Expectation("calibrating on SQuAD lowers the SQuAD answer NLL of the pruned model", "squad", "answer_nll", -1,
                (pruned("squad"), pruned("wikitext2"))),
    Expectation(f"calibrating on SQuAD lowers {_ANSWERABLE} of the pruned model", "squad", "HasAns_answer_nll", -1,
                (pruned("squad"), pruned("wikitext2"))),
    Expectation("calibrating on GSM8K lowers the GSM8K answer NLL of the pruned model", "gsm8k", "answer_nll", -1,
                (pruned("gsm8k"), pruned("wikitext2"))),
    Expectation("calibrating on SQuAD costs WikiText2 perplexity", "wikitext2", "ppl", +1, (pruned("squad"),
                pruned("wikitext2"))),
    Expectation("calibrating on GSM8K costs WikiText2 perplexity", "wikitext2", "ppl", +1, (pruned("gsm8k"),
                pruned("wikitext2"))),
)
ROW_NAMES = (DENSE_ROW, *(pruned(c) for c in CALIBRATION_ORDER), *BY_NAME)


def design_problems() -> list[str]:
    """Every comparison or expectation that names a row the matrix does not have (or has no rows to compare)."""
    problems = [f"comparison {c.a} - {c.b} names a row that is not in {', '.join(ROW_NAMES)}"
                for c in COMPARISONS if c.a not in ROW_NAMES or c.b not in ROW_NAMES]
    for e in EXPECTATIONS:
        if e.finetuned_on is not None:
            if e.rows is not None or e.finetuned_on not in FINETUNE_DATA:
                problems.append(f"expectation '{e.statement}': finetuned_on must be one of {', '.join(FINETUNE_DATA)} "
                                "and exclude rows")
        elif e.rows is None or any(row not in ROW_NAMES for row in e.rows):
            problems.append(f"expectation '{e.statement}' names a row that is not in {', '.join(ROW_NAMES)}")
        if e.sign not in (-1, 1):
            problems.append(f"expectation '{e.statement}': sign must be -1 or +1")
    return problems


if design_problems():
    raise ValueError("lib/experiments/design.py: " + "; ".join(design_problems()))
