"""Every path under the OUT directory of an experiment run, defined once: the runner writes there and the
summary reads there (lib.experiments.runner, lib.experiments.rows).

    OUT/dense/eval.json                         the dense model (no pruning, no fine-tuning)
    OUT/pruned/<tag>/results/results.json       a pruned model's pruning report (main_block_three_tier.py --save)
    OUT/pruned/<tag>/model/                     the pruned model (--save_model)
    OUT/pruned/<tag>/eval.json                  its evaluation before fine-tuning
    OUT/<exp>/model/                            a fine-tuned model (dense_ft/*.py --output_dir), with
                                                finetune_results.json and sparsity.json
    OUT/<exp>/eval.json                         its evaluation
    OUT/logs/<step>.log                         each step's output (appended per run)
    OUT/markers/<step>.done                     a finished step: its command, seconds, outputs (lib.experiments.markers)
    OUT/markers/<step>.started                  a step under way (its command)
    OUT/results.md, OUT/results.png             the summary

<tag> is the calibration data set with '+' as '-' and ':' / ',' as '_' ("wikitext2+squad" -> "wikitext2-squad").
A calibration seed N != 0 is a suffix: pruned/<tag>_seedN, <exp>_seedN (seed 0 keeps the plain names, so adding
seeds to a finished run reuses it). A row is named by its directory under OUT ("dense", "pruned/squad_seed1",
"exp1"); its steps are named after it (eval_dense, prune_squad_seed1, eval_pruned_squad_seed1, ft_exp1, eval_exp1).

Paths are strings joined with '/' onto OUT exactly as given, so the commands a run prints and logs spell them as
the user wrote OUT (the bash runner did the same; its markers stay valid).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

EVAL_FILE = "eval.json"
PRUNE_RESULTS_FILE = "results.json"           # main_block_three_tier.py --save DIR writes DIR/results.json
FINETUNE_RESULTS_FILE = "finetune_results.json"  # lib.training.run.RESULTS_FILE
SPARSITY_FILE = "sparsity.json"               # lib.training.run.SPARSITY_FILE
MODEL_CONFIG_FILE = "config.json"
DENSE_ROW = "dense"
PRUNED_DIR = "pruned"
MODEL_DIR = "model"
RESULTS_DIR = "results"
LOGS_DIR = "logs"
MARKERS_DIR = "markers"
DONE_SUFFIX = ".done"
STARTED_SUFFIX = ".started"
SUMMARY_STEP = "summary"  # logged like a step (logs/summary.log), never marked
PRUNE_PREFIX, FINETUNE_PREFIX, EVAL_PREFIX = "prune_", "ft_", "eval_"
CHECKPOINT_GLOB = "checkpoint-*"  # the Trainer's checkpoints inside a fine-tune's model directory
SEED_SUFFIX = re.compile(r"_seed(\d+)$")


def calibration_tag(calibration: str) -> str:
    """The directory name of a calibration data set: 'wikitext2+squad' -> 'wikitext2-squad', 'c4:0.5,x' -> 'c4_0.5_x'."""
    return re.sub(r"[:,]", "_", calibration.replace("+", "-"))


def seed_suffix(seed: str) -> str:
    """'' for seed 0 (also '00'), else '_seed<seed as written>'."""
    return "" if int(seed) == 0 else f"_seed{seed}"


def split_seed(name: str) -> tuple[str, int]:
    """'pruned/squad_seed2' -> ('pruned/squad', 2); a name without the suffix is seed 0."""
    match = SEED_SUFFIX.search(name)
    return (name[: match.start()], int(match.group(1))) if match else (name, 0)


def pruned_row(calibration: str, seed: str = "0") -> str:
    """'pruned/<tag><seed suffix>': the model pruned with `calibration` and `seed`, before fine-tuning."""
    return f"{PRUNED_DIR}/{calibration_tag(calibration)}{seed_suffix(seed)}"


def finetuned_row(experiment: str, seed: str = "0") -> str:
    """'<experiment><seed suffix>': the experiment's fine-tuned model."""
    return f"{experiment}{seed_suffix(seed)}"


def eval_step(row: str) -> str:
    """eval_dense, eval_pruned_<tag>, eval_<exp> (with the row's seed suffix)."""
    return EVAL_PREFIX + row.replace("/", "_")


def prune_step(row: str) -> str:
    """prune_<tag><seed suffix> for the row 'pruned/<tag><seed suffix>'."""
    return PRUNE_PREFIX + row.split("/", 1)[1]


def finetune_step(row: str) -> str:
    """ft_<exp><seed suffix>."""
    return FINETUNE_PREFIX + row


@dataclass(frozen=True)
class Layout:
    """The paths of one OUT directory, as strings beginning with `out` exactly as given."""

    out: str

    def path(self, *parts: str) -> str:
        return "/".join([self.out, *parts])

    def relative(self, path: str) -> str:
        """`path` without its leading 'OUT/' (as a marker lists its outputs)."""
        prefix = self.out + "/"
        return path[len(prefix):] if path.startswith(prefix) else path

    def eval_json(self, row: str) -> str:
        return self.path(row, EVAL_FILE)

    def model_dir(self, row: str) -> str:
        return self.path(row, MODEL_DIR)

    def prune_results_dir(self, row: str) -> str:
        return self.path(row, RESULTS_DIR)

    def prune_results(self, row: str) -> str:
        return self.path(row, RESULTS_DIR, PRUNE_RESULTS_FILE)

    def model_config(self, row: str) -> str:
        return self.path(row, MODEL_DIR, MODEL_CONFIG_FILE)

    def finetune_results(self, row: str) -> str:
        return self.path(row, MODEL_DIR, FINETUNE_RESULTS_FILE)

    def sparsity(self, row: str) -> str:
        return self.path(row, MODEL_DIR, SPARSITY_FILE)

    @property
    def logs(self) -> str:
        return self.path(LOGS_DIR)

    def log(self, step: str) -> str:
        return self.path(LOGS_DIR, step + ".log")

    @property
    def markers(self) -> str:
        return self.path(MARKERS_DIR)

    def done_marker(self, step: str) -> str:
        return self.path(MARKERS_DIR, step + DONE_SUFFIX)

    def started_marker(self, step: str) -> str:
        return self.path(MARKERS_DIR, step + STARTED_SUFFIX)

    @property
    def results_md(self) -> str:
        return self.path("results.md")

    @property
    def results_png(self) -> str:
        return self.path("results.png")
