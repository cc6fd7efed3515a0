"""The settings of an experiment run: every environment variable (and its flag) with its default, its kind and
its check, resolved as flag > environment > preset > default and checked before the first step.

A value stays the text it was given (a command shows `--learning_rate 1e-4` as written, so a run's commands, and
the markers that record them, do not depend on how a number is parsed); its kind checks it and says how to read it.
An empty value is no value (as in the bash runner this replaces: `FT_ARGS= ` leaves the preset's). A default
"$NAME" is the value of the setting NAME (resolved before it).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping

from lib.experiments.design import BY_NAME, EXPERIMENTS, PRESETS


class SettingError(ValueError):
    """A setting that cannot be used; the message is one line naming the variable."""


Check = Callable[[str, str], None]  # (variable, value) -> None, or raises SettingError


def whole(minimum: int, optional: bool = False) -> Check:
    def check(name: str, value: str) -> None:
        if optional and value == "":
            return
        match = re.fullmatch(r"(-?)0*([0-9]+)", value)
        if not match or int(match[1] + match[2]) < minimum:
            raise SettingError(f"{name}='{value}' must be a whole number >= {minimum}{' (or empty)' if optional else ''}")
    check.kind = f"whole number >= {minimum}{' or empty' if optional else ''}"
    return check


def number(minimum: float) -> Check:
    def check(name: str, value: str) -> None:
        if not is_number(value, minimum):
            raise SettingError(f"{name}='{value}' must be a finite number >= {minimum:g}")
    check.kind = f"number >= {minimum:g}"
    return check


def is_number(text: str, minimum: float) -> bool:
    """A plain finite decimal (digits, optional point and exponent; no sign) >= minimum."""
    return (re.fullmatch(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text) is not None
            and math.isfinite(float(text)) and float(text) >= minimum)


def one_of(*choices: str, message: str) -> Check:
    def check(name: str, value: str) -> None:
        if value not in choices:
            raise SettingError(message.format(name=name, value=value))
    check.kind = " | ".join(choices)
    return check


def limits_check(name: str, value: str) -> None:
    """Empty, or words that are each a whole number >= 1 or TASK=N."""
    for word in value.split():
        if not re.fullmatch(r"([a-z0-9_]+=)?0*[1-9][0-9]*", word):
            raise SettingError(f"{name}: '{word}' must be a whole number >= 1 or TASK=N, e.g. \"squad=200 gsm8k=50\"")


limits_check.kind = "N or TASK=N words"


def ratios_check(name: str, value: str) -> None:
    """Three numbers >= 0 (dense, 2:4, top-k shares) summing to 1."""
    words = value.split()
    if len(words) != 3:
        raise SettingError(f"{name} needs three numbers (dense, 2:4, top-k shares), got '{value}'")
    for word in words:
        if not is_number(word, 0):
            raise SettingError(f"{name}='{word}' must be a finite number >= 0")
    if abs(sum(float(word) for word in words) - 1) >= 1e-6:
        raise SettingError(f"{name}='{value}' must sum to 1")


ratios_check.kind = "three numbers summing to 1"


def experiments_check(name: str, value: str) -> None:
    names = " ".join(e.name for e in EXPERIMENTS)
    if not value.split():
        raise SettingError(f"{name} is empty; choose from: {names}")
    for exp in value.split():
        if exp not in BY_NAME:
            raise SettingError(f"unknown experiment '{exp}' in {name}; choose from: {names}")


experiments_check.kind = "experiment names"


def seeds_check(name: str, value: str) -> None:
    if name == "SEEDS" and not value.split():
        raise SettingError(f'{name} is empty; give one or more integers, e.g. {name}="0 1 2"')
    for seed in value.split():
        if not re.fullmatch(r"[0-9]+", seed):
            raise SettingError(f"seed '{seed}' in SEEDS / FT_SEEDS is not a non-negative integer")


seeds_check.kind = "non-negative integers"

SWITCH = one_of("0", "1", message="{name}='{value}' must be 0 or 1")
PRESET_NAMES = tuple(PRESETS)


def setting(env: str, default: str, about: str, check: Check | None = None, flag: str | None = None,
            group: str = "run") -> dataclasses.Field:
    """One setting: its environment variable, default ("$NAME": that setting's value), help, check and flag."""
    return dataclasses.field(default=default, metadata={"env": env, "about": about, "check": check, "flag": flag,
                                                        "group": group})


@dataclass(frozen=True)
class Settings:
    """Every setting of a run, as text (see the module docstring); `resolve` fills and checks them."""

    preset: str = setting("PRESET", "", "cpu-smoke, cpu or paper: fills what neither a flag nor the environment set",
                          one_of("", *PRESET_NAMES, message="unknown preset '{value}'; use " + ", ".join(
                              PRESET_NAMES[:-1]) + f" or {PRESET_NAMES[-1]}"), "--preset")
    dry_run: str = setting("DRY_RUN", "", "non-empty: print the steps and their commands, run nothing", None,
                           "--dry_run")
    python: str = setting("PYTHON", "python", "the interpreter of every step (and of this runner, through the "
                          "bash wrapper)")
    model: str = setting("MODEL", "smollm2-135m", "the dense model (an alias, a Hub name or a directory)",
                         flag="--model")
    data_dir: str = setting("DATA_DIR", "", "empty: the CLIs' default (env WANDA_DATA_DIR, else the Hub)",
                            flag="--data_dir")
    out: str = setting("OUT", "out/task_experiments", "the output directory (layout: lib/experiments/layout.py)",
                       flag="--out")
    exps: str = setting("EXPS", " ".join(BY_NAME), "the rows to run", experiments_check, "--exps")
    seed: str = setting("SEED", "0", "evaluation seed (generation is greedy) and SEEDS' default", whole(0))
    seeds: str = setting("SEEDS", "$SEED", "calibration seeds: one pruned model per calibration set and seed",
                         seeds_check, "--seeds")
    ft_seeds: str = setting("FT_SEEDS", "$SEEDS", "the seeds whose pruned models are fine-tuned (a subset of SEEDS)",
                            seeds_check, "--ft_seeds")
    sparsity_ratios: str = setting("SPARSITY_RATIOS", "0.35 0.45 0.2", "dense, 2:4 and top-k shares of the blocks",
                                   ratios_check, "--sparsity_ratios", "pruning")
    nsamples: str = setting("NSAMPLES", "128", "calibration samples", whole(1), "--nsamples", "pruning")
    seqlen: str = setting("SEQLEN", "2048", "calibration sequence length", whole(2), "--seqlen", "pruning")
    prune_args: str = setting("PRUNE_ARGS", "", "extra pruning flags, e.g. \"--prune_method sparsegpt\"",
                              group="pruning")
    ft_launcher: str = setting("FT_LAUNCHER", "$PYTHON", "e.g. \"torchrun --nproc_per_node 8\"", group="fine-tuning")
    ft_epochs: str = setting("FT_EPOCHS", "3", "training epochs (> 0 unless FT_MAX_STEPS > 0)", number(0),
                             "--epochs", "fine-tuning")
    ft_max_steps: str = setting("FT_MAX_STEPS", "-1", "> 0 overrides FT_EPOCHS", whole(-1), "--max_steps",
                                "fine-tuning")
    ft_lr: str = setting("FT_LR", "2e-5", "learning rate", number(0), "--lr", "fine-tuning")
    ft_batch_size: str = setting("FT_BATCH_SIZE", "4", "per-device batch size", whole(1), group="fine-tuning")
    ft_grad_accum: str = setting("FT_GRAD_ACCUM", "4", "gradient accumulation steps", whole(1), group="fine-tuning")
    ft_max_length: str = setting("FT_MAX_LENGTH", "512", "SQuAD / GSM8K: prompt + answer tokens", whole(2),
                                 group="fine-tuning")
    ft_block_size: str = setting("FT_BLOCK_SIZE", "512", "WikiText2: tokens per training window", whole(2),
                                 group="fine-tuning")
    ft_max_train_samples: str = setting("FT_MAX_TRAIN_SAMPLES", "", "empty: all (WikiText2: 1000 windows)",
                                        whole(1, optional=True), group="fine-tuning")
    ft_eval_samples: str = setting("FT_EVAL_SAMPLES", "0", "the fine-tuning CLI's own eval_loss; 0: none", whole(0),
                                   group="fine-tuning")
    ft_save_steps: str = setting("FT_SAVE_STEPS", "200", "a checkpoint every N steps (resume)", whole(1),
                                 group="fine-tuning")
    ft_save_total_limit: str = setting("FT_SAVE_TOTAL_LIMIT", "1", "checkpoints kept while a fine-tune runs",
                                       whole(1), group="fine-tuning")
    ft_logging_steps: str = setting("FT_LOGGING_STEPS", "10", "log the loss every N steps", whole(1),
                                    group="fine-tuning")
    ft_bf16: str = setting("FT_BF16", "0", "1: --bf16", SWITCH, group="fine-tuning")
    ft_args: str = setting("FT_ARGS", "", "extra Trainer flags", group="fine-tuning")
    keep_checkpoints: str = setting("KEEP_CHECKPOINTS", "0", "0: delete checkpoint-* once a fine-tune has finished",
                                    SWITCH, group="fine-tuning")
    eval_tasks: str = setting("EVAL_TASKS", "wikitext2 squad gsm8k boolq", "scripts/eval_tasks.py --tasks",
                              group="evaluation")
    eval_limits: str = setting("EVAL_LIMITS", "", "e.g. \"squad=200 gsm8k=50 boolq=500\"; empty: everything", limits_check,
                               "--eval_limits", "evaluation")
    eval_nll_limits: str = setting("EVAL_NLL_LIMITS", "", "answer NLL on more examples than generation, e.g. "
                                   "\"squad=500 gsm8k=300\"", limits_check, "--nll_limits", "evaluation")
    eval_windows: str = setting("EVAL_WINDOWS", "", "perplexity windows; empty: all", whole(1, optional=True),
                                group="evaluation")
    eval_seqlen: str = setting("EVAL_SEQLEN", "$SEQLEN", "evaluation sequence length", whole(2), group="evaluation")
    eval_batch_size: str = setting("EVAL_BATCH_SIZE", "8", "evaluation batch size", whole(1), group="evaluation")
    eval_max_new_tokens: str = setting("EVAL_MAX_NEW_TOKENS", "", "e.g. \"squad=24 gsm8k=128\"; empty: the tasks' "
                                       "defaults", limits_check, group="evaluation")
    eval_dtype: str = setting("EVAL_DTYPE", "auto", "evaluation dtype", one_of(
        "auto", "float32", "bfloat16", "float16", message="{name}='{value}' must be auto, float32, bfloat16 or float16"),
        group="evaluation")
    eval_args: str = setting("EVAL_ARGS", "", "extra scripts/eval_tasks.py flags", group="evaluation")

    def words(self, name: str) -> list[str]:
        """The whitespace-separated words of the setting `name` (a field name: "prune_args")."""
        return getattr(self, name).split()

    @property
    def environment(self) -> dict[str, str]:
        """Variables the preset exports to every step (when not already set)."""
        return PRESETS[self.preset].environment if self.preset else {}


FIELDS = {f.metadata["env"]: f for f in dataclasses.fields(Settings)}
FLAGS = {f.metadata["flag"]: env for env, f in FIELDS.items() if f.metadata["flag"]}


def resolve(environ: Mapping[str, str], flags: Mapping[str, str]) -> Settings:
    """The settings from `flags` ({variable: value}), then `environ`, then the preset, then the defaults; checked.

    Raises SettingError (one line naming the variable) for the first setting that fails its check.
    """
    values: dict[str, str] = {}
    given = {env: flags.get(env) or environ.get(env, "") for env in FIELDS}
    check_one("PRESET", given["PRESET"])
    preset = PRESETS[given["PRESET"]].values if given["PRESET"] else {}
    for env, f in FIELDS.items():
        default = f.default[1:] if f.default.startswith("$") else None
        values[env] = given[env] or preset.get(env, "") or (values[default] if default else f.default)
    for env in FIELDS:
        check_one(env, values[env])
    check_together(values)
    return Settings(**{f.name: values[env] for env, f in FIELDS.items()})


def check_one(env: str, value: str) -> None:
    check = FIELDS[env].metadata["check"]
    if check is not None:
        check(env, value)


def check_together(values: Mapping[str, str]) -> None:
    """What one setting cannot check alone: epochs without steps, fine-tuned seeds outside SEEDS."""
    if int(values["FT_MAX_STEPS"]) <= 0 and float(values["FT_EPOCHS"]) <= 0:
        raise SettingError(f"FT_EPOCHS='{values['FT_EPOCHS']}' must be > 0 unless FT_MAX_STEPS > 0")
    for seed in values["FT_SEEDS"].split():
        if seed not in values["SEEDS"].split():
            raise SettingError(f"FT_SEEDS seed {seed} is not in SEEDS ({values['SEEDS']}); "
                               "fine-tuning needs its pruned model")


def _check_presets() -> None:
    unknown = sorted({name for p in PRESETS.values() for name in p.values} - set(FIELDS))
    if unknown:
        raise ValueError(f"lib/experiments/design.py: presets set unknown settings {', '.join(unknown)}")


_check_presets()


def shown(value: str) -> str:
    """A value as --help shows it: quoted when empty or holding a space."""
    return value if value and " " not in value else repr(value)


def variables_help() -> str:
    """Every variable with its default (without a preset), flag and meaning, by group (the runner's --help)."""
    lines = []
    for group in dict.fromkeys(f.metadata["group"] for f in FIELDS.values()):
        lines.append(f"  # {group}")
        for env, f in FIELDS.items():
            if f.metadata["group"] == group:
                meta = f.metadata
                flag = f" ({meta['flag']})" if meta["flag"] else ""
                kind = f"; {meta['check'].kind}" if meta["check"] is not None and env != "PRESET" else ""
                lines.append(f"  {env}={shown(f.default)}{flag}: {meta['about']}{kind}")
    return "\n".join(lines)
