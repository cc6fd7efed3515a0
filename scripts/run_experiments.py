#!/usr/bin/env python
"""The experiment matrix: prune with one data set, fine-tune on another, evaluate on every task.

The rows are defined once, in lib/experiments/design.py (listed at the end; wikitext2 as the fine-tune data
means causal-LM fine-tuning with dense_ft/finetune_lm.py), plus the reference rows: the dense model and every
pruned model before fine-tuning. Every model is evaluated with scripts/eval_tasks.py (WikiText2 PPL, SQuAD v2,
GSM8K, BoolQ), then scripts/summarize_experiments.py writes $OUT/results.md and $OUT/results.png.
scripts/run_task_experiments.sh runs this script with $PYTHON (default: python).

Usage:
  bash scripts/run_task_experiments.sh --preset cpu-smoke --data_dir DATA --out out/smoke
  bash scripts/run_task_experiments.sh --preset cpu --data_dir DATA --out out/cpu
  bash scripts/run_task_experiments.sh --preset paper --data_dir DATA --out out/paper
  EXPS="baseline exp1" NSAMPLES=16 bash scripts/run_task_experiments.sh --dry_run
  SEEDS="0 1 2" FT_SEEDS=0 bash scripts/run_task_experiments.sh ...   # 3 pruned models per calibration set

Calibration seeds: every seed in SEEDS gets its own pruned model per calibration data set, and every seed in
FT_SEEDS (default: all of SEEDS; a subset seeds only the pruned rows) its own fine-tune of it (Trainer --seed
too). Seed 0 keeps the plain names; seed N writes pruned/<tag>_seedN and <exp>_seedN, so adding seeds to a
finished single-seed run reuses it. results.md shows mean ± sd over the seeds of each row and 95%
paired-bootstrap intervals for every difference.

Every setting is an environment variable (listed below with its default); some also have a flag. Precedence:
flag > environment > preset > default; an empty value counts as unset. Without a preset the protocol is the
design notes' (nsamples 128, seqlen 2048, 3 epochs, lr 2e-5, batch 4 x accumulation 4, full evaluation) on
$MODEL. Every setting is checked before the first step (one error line naming the variable).

Layout of $OUT (lib/experiments/layout.py): dense/eval.json; pruned/<calibration>/{results/,model/,eval.json}
(one pruned model per calibration data set, shared by the experiments that use it); <exp>/{model/,eval.json};
logs/<step>.log; markers/<step>.done; results.md; results.png (seed N != 0: pruned/<calibration>_seedN/ and
<exp>_seedN/, steps named ..._seedN).

Resuming: a step that finished has markers/<step>.done (its command and its outputs) and is skipped on a rerun
while all its outputs are still there and sound (else it runs again; a damaged eval.json is kept as
eval.json.damaged-<time>); a finished step whose command has changed stops the run before any step runs (use
another $OUT, or delete that marker and those of the steps after it). An interrupted fine-tune resumes from its
latest complete checkpoint-* (--resume_from_checkpoint latest). results.md lists every expected row, "no data"
for one whose eval.json is missing. A failed step stops the run with its exit status and names its log file.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

if __package__ in (None, ""):  # run as `python scripts/run_experiments.py`: this checkout's `lib` first
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core.cli import EXIT_USAGE, interrupts_end_in_one_line, one_line, setup_logging
from lib.experiments.design import PRESETS, table
from lib.experiments.runner import Runner, RunStopped, StepFailed, StepInterrupted
from lib.experiments.settings import FIELDS, FLAGS, SettingError, resolve, shown, variables_help

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))  # as given, like the bash runner's $REPO


class Parser(argparse.ArgumentParser):
    """Errors as the bash runner wrote them: one `error:` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {one_line(message)}; see --help\n")


def wrapped(items: list[str], first: str, rest: str, width: int = 116) -> str:
    """`items` joined by spaces into lines of at most `width` characters (an item is never split)."""
    lines = [first]
    for item in items:
        if len(lines[-1]) + 1 + len(item) > width and lines[-1].strip():
            lines.append(rest)
        lines[-1] += ("" if not lines[-1].strip() else " ") + item
    return "\n".join(lines)


def epilog() -> str:
    presets = "\n".join(
        wrapped(f"{name}: {preset.about}.".split(), "  ", "      ") + "\n"
        + wrapped([f"{k}={shown(v)}" for k, v in preset.values.items()]
                  + [f"(exports {k}={v})" for k, v in preset.environment.items()], "    ", "    ")
        for name, preset in PRESETS.items())
    return (f"Environment variables, their flags and defaults (without a preset):\n{variables_help()}\n\n"
            f"Presets (--preset / PRESET):\n{presets}\n\n"
            f"The experiment matrix (lib/experiments/design.py):\n{table()}")


def build_parser() -> Parser:
    parser = Parser(prog="run_task_experiments.sh", description=__doc__, epilog=epilog(), allow_abbrev=False,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, env in FLAGS.items():
        if env == "DRY_RUN":
            parser.add_argument(flag, dest=env, action="store_const", const="1",
                                help=FIELDS[env].metadata["about"])
        else:
            parser.add_argument(flag, dest=env, metavar=env, help=f"{FIELDS[env].metadata['about']} (env {env})")
    return parser


def main(argv: list[str] | None = None) -> int:
    setup_logging(logging.WARNING)
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        print(f"error: unknown argument '{unknown[0]}'; see --help", file=sys.stderr)
        return EXIT_USAGE
    flags = {env: value for env, value in vars(args).items() if value is not None}
    empty = next((flag for flag, env in FLAGS.items() if flags.get(env) == ""), None)
    if empty:
        print(f"error: {empty} needs a value; see --help", file=sys.stderr)
        return EXIT_USAGE
    try:
        settings = resolve(os.environ, flags)
    except SettingError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    runner = Runner(settings, REPO, say=lambda line: print(line, flush=True))
    with interrupts_end_in_one_line():
        try:
            runner.run()
        except RunStopped as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            return EXIT_USAGE
        except StepFailed as err:
            print(f"error: {err}", file=sys.stderr)
            print("\n".join(f"  | {line}" for line in err.tail), file=sys.stderr)
            return err.status
        except StepInterrupted as err:
            print(f"error: {err}", file=sys.stderr)
            return 128 + err.signum
        except OSError as err:  # OUT, its logs or markers cannot be written
            print(f"error: {err.filename}: {err.strerror}; check OUT ({settings.out})", file=sys.stderr)
            return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
