"""The steps of an experiment run, in order, with their commands: what the runner executes (or prints in a dry run).

    eval_dense                                   scripts/eval_tasks.py on the dense model
    then for each experiment of EXPS, for each seed of SEEDS:
      prune_<tag><sfx>, eval_pruned_<tag><sfx>   main_block_three_tier.py + its evaluation, once per calibration
                                                 data set and seed (experiments that calibrate alike share it)
      ft_<exp><sfx>, eval_<exp><sfx>             dense_ft/finetune_<data>.py (wikitext2: finetune_lm.py) from that
                                                 pruned model + its evaluation, for the seeds of FT_SEEDS

Every command is the one the bash runner ran, word for word (lib.experiments.layout spells the paths), so logs,
markers and --dry_run output look as they did.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lib.experiments.design import BY_NAME
from lib.experiments.layout import (DENSE_ROW, Layout, eval_step, finetune_step, finetuned_row, prune_step,
                                    pruned_row)
from lib.experiments.settings import Settings


@dataclass(frozen=True)
class Step:
    """One step: its name (markers/<name>.done, logs/<name>.log), full command, and the outputs its marker lists.
    `finetune_dir`: a fine-tune's --output_dir (where its checkpoints are)."""

    name: str
    command: tuple[str, ...]
    outputs: tuple[str, ...]
    finetune_dir: str | None = None


@dataclass
class Plan:
    """The steps in order and the rows results.md must show (with or without data)."""

    steps: list[Step] = field(default_factory=list)
    expected_rows: list[str] = field(default_factory=list)


def build_plan(settings: Settings, repo: str) -> Plan:
    """Every step of the run that `settings` describe; `repo` is the checkout whose entry points run."""
    layout = Layout(settings.out)
    plan = Plan()
    plan.steps.append(evaluate(settings, repo, DENSE_ROW, settings.model))
    plan.expected_rows.append(DENSE_ROW)
    pruned: set[tuple[str, str]] = set()
    ft_seeds = settings.words("ft_seeds")
    for name in settings.words("exps"):
        calibration = BY_NAME[name].calibration
        for seed in settings.words("seeds"):
            if (calibration, seed) not in pruned:
                row = pruned_row(calibration, seed)
                plan.steps += [prune(settings, repo, calibration, seed), evaluate(settings, repo, row,
                                                                                  layout.model_dir(row))]
                pruned.add((calibration, seed))
                plan.expected_rows.append(row)
            if seed in ft_seeds:
                row = finetuned_row(name, seed)
                plan.steps += [finetune(settings, repo, name, seed), evaluate(settings, repo, row,
                                                                              layout.model_dir(row))]
                plan.expected_rows.append(row)
    return plan


def data_args(settings: Settings) -> list[str]:
    return ["--data_dir", settings.data_dir] if settings.data_dir else []


def evaluate(settings: Settings, repo: str, row: str, model: str) -> Step:
    """eval_<row>: scripts/eval_tasks.py on `model`, writing OUT/<row>/eval.json."""
    output = Layout(settings.out).eval_json(row)
    command = [settings.python, f"{repo}/scripts/eval_tasks.py", "--model", model, "--tasks",
               *settings.words("eval_tasks"), *data_args(settings), "--seqlen", settings.eval_seqlen]
    if settings.eval_windows:
        command += ["--eval_windows", settings.eval_windows]
    for flag, name in (("--limit", "eval_limits"), ("--nll_limit", "eval_nll_limits"),
                       ("--max_new_tokens", "eval_max_new_tokens")):
        if settings.words(name):
            command += [flag, *settings.words(name)]
    command += ["--batch_size", settings.eval_batch_size, "--dtype", settings.eval_dtype, "--seed", settings.seed,
                "--output", output, *settings.words("eval_args")]
    return Step(eval_step(row), tuple(command), (output,))


def prune(settings: Settings, repo: str, calibration: str, seed: str) -> Step:
    """prune_<tag><sfx>: main_block_three_tier.py with `calibration` and `seed`, saving results and model."""
    layout = Layout(settings.out)
    row = pruned_row(calibration, seed)
    command = [settings.python, f"{repo}/main_block_three_tier.py", "--model", settings.model, *data_args(settings),
               "--calibration_dataset", calibration, "--nsamples", settings.nsamples, "--seqlen", settings.seqlen,
               "--sparsity_ratios", *settings.words("sparsity_ratios"), "--seed", seed, "--no_eval",
               "--save", layout.prune_results_dir(row), "--save_model", layout.model_dir(row),
               *settings.words("prune_args")]
    return Step(prune_step(row), tuple(command), (layout.prune_results(row), layout.model_config(row)))


def finetune_script(data: str) -> str:
    """The dense_ft/ entry point that fine-tunes on `data`: a text corpus (wikitext2) trains as a causal LM."""
    return "finetune_lm.py" if data == "wikitext2" else f"finetune_{data}.py"


def finetune(settings: Settings, repo: str, experiment: str, seed: str) -> Step:
    """ft_<exp><sfx>: the experiment's fine-tune of its pruned model (calibration and seed), Trainer --seed `seed`."""
    layout = Layout(settings.out)
    row, data = finetuned_row(experiment, seed), BY_NAME[experiment].finetune
    output_dir = layout.model_dir(row)
    task_args = (["--dataset_name", "wikitext2", "--block_size", settings.ft_block_size] if data == "wikitext2"
                 else ["--max_length", settings.ft_max_length])
    command = [*settings.words("ft_launcher"), f"{repo}/dense_ft/{finetune_script(data)}",
               "--model_name_or_path", layout.model_dir(pruned_row(BY_NAME[experiment].calibration, seed)),
               *data_args(settings), "--output_dir", output_dir, *task_args,
               "--num_train_epochs", settings.ft_epochs, "--max_steps", settings.ft_max_steps,
               "--learning_rate", settings.ft_lr, "--per_device_train_batch_size", settings.ft_batch_size,
               "--gradient_accumulation_steps", settings.ft_grad_accum]
    if settings.ft_max_train_samples:
        command += ["--max_train_samples", settings.ft_max_train_samples]
    command += ["--max_eval_samples", settings.ft_eval_samples, "--save_strategy", "steps",
                "--save_steps", settings.ft_save_steps, "--save_total_limit", settings.ft_save_total_limit,
                "--logging_steps", settings.ft_logging_steps, "--seed", seed, "--report_to", "none",
                "--disable_tqdm", "true"]
    if settings.ft_bf16 == "1":
        command.append("--bf16")
    command += settings.words("ft_args")
    return Step(finetune_step(row), tuple(command),
                (layout.model_config(row), layout.finetune_results(row)), output_dir)
