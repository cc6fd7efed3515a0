"""Command-line arguments of the fine-tuning CLIs (dense_ft/*.py): dataclasses for `HfArgumentParser`
(lib.core.arguments.OneLineHfArgumentParser: its errors are one line).

`parse_args(task)` returns (ModelArguments, TaskDataArguments | LMDataArguments, TrainingArguments) and
exits with a one-line error for values that cannot run; `check_training_args` applies the output rule
to --output_dir before anything is loaded.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from lib.core.arguments import flag
from lib.core.cli import check_finite_fields
from lib.core.outputs import Output, check_outputs
from lib.data.sources import resolve_data_dir
from lib.models.loading import DEFAULT_MODEL, run_inputs, saved_size_estimate
from lib.training.checkpoints import RESUME_LATEST

from lib.data import registry
from lib.training.data import LM_TASK


def finetune_tasks() -> tuple[str, ...]:
    """The example datasets with a fine-tuning prompt and target (lib.data.registry), then "lm"."""
    examples = (n for n in registry.names("examples") if registry.get(n).finetunable)
    return (*examples, LM_TASK)



@dataclass
class ModelArguments:
    """Which model to fine-tune and how its sparsity is kept."""

    model_name_or_path: str = flag(DEFAULT_MODEL, "Pruned model directory, Hub id, .gguf file or the alias "
                                   f"{DEFAULT_MODEL!r} (anything lib.models.loading.load_model accepts).")
    tokenizer_name: str | None = flag(None, "Tokenizer to use if not the one saved with the model.")
    preserve_sparsity: bool = flag(True, "Keep the zero pattern of the decoder Linear weights (gradient masking + "
                                   "re-masking after every optimizer step). --no_preserve_sparsity is plain Trainer "
                                   "fine-tuning, which densifies a pruned model.")
    verify_checksums: bool = flag(True, "Verify the checksums of a tiered model directory (docs/tiered-format.md); "
                                  "--no_verify_checksums skips them for trusted files (the structure is still checked).")
    overwrite_output_dir: bool = flag(False, "Write into an --output_dir that holds files this toolkit did not write, or "
                                      "another kind of its outputs: same-named entries are replaced, nothing else is "
                                      "deleted (the meaning of --overwrite in every CLI; default: refuse).")
    min_layer_sparsity: float = flag(0.01, "A decoder Linear counts as pruned (its zeros are kept) when at least this "
                                     "fraction of its weights is zero, or when the model's tier map lists it. Below "
                                     "it, zeros are incidental (e.g. from GGUF dequantization) and train normally.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_layer_sparsity < 1.0:
            raise ValueError(f"--min_layer_sparsity must be in [0, 1), got {self.min_layer_sparsity}")


@dataclass
class DataArguments:
    """Data options shared by every task."""

    data_dir: str | None = flag(None, "Directory with the official file layouts (squad/dev-v2.0.json, "
                                "gsm8k/test.jsonl, wikitext2/wiki.test.raw, ...), e.g. --data_dir DATA; default: "
                                "lib.data's default.")
    max_train_samples: int | None = flag(None, "Use only the first N training examples (lm: the number of random "
                                         "--block_size training windows, default 1000).")
    max_eval_samples: int | None = flag(None, "Evaluate on the first N examples of the evaluation split (SQuAD dev, "
                                        "GSM8K test; lm: the first N test windows). 0 disables evaluation.")

    def __post_init__(self) -> None:
        resolve_data_dir(self.data_dir)  # a missing directory fails here, before any model loads
        if self.max_train_samples is not None and self.max_train_samples <= 0:
            raise ValueError(f"--max_train_samples must be positive, got {self.max_train_samples}")
        if self.max_eval_samples is not None and self.max_eval_samples < 0:
            raise ValueError(f"--max_eval_samples must be >= 0 (0 = no evaluation), got {self.max_eval_samples}")


@dataclass
class TaskDataArguments(DataArguments):
    """Prompt + answer tasks (SQuAD, GSM8K)."""

    max_length: int = flag(512, "Longest prompt + answer in tokens; longer examples are cut on the right and "
                                "dropped when no answer token is left.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length <= 1:
            raise ValueError(f"--max_length must be at least 2 tokens, got {self.max_length}")


@dataclass
class LMDataArguments(DataArguments):
    """Causal-LM fine-tuning on raw text."""

    dataset_name: str = flag("wikitext2", "Text corpus to fine-tune on (a text dataset of lib.data.registry).",
                             choices=list(registry.names("text")))
    block_size: int = flag(512, "Tokens per training / evaluation window.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dataset_name not in registry.names("text"):
            raise ValueError(f"--dataset_name {self.dataset_name!r} is not one of {', '.join(registry.names('text'))}")
        if self.block_size <= 1:
            raise ValueError(f"--block_size must be at least 2 tokens, got {self.block_size}")




def check_precision(bf16: bool, fp16: bool, use_cpu: bool) -> None:
    """Raise a one-line ValueError when the requested mixed precision cannot run on this machine."""
    cuda = torch.cuda.is_available() and not use_cpu
    if fp16 and not cuda:
        raise ValueError("--fp16 needs a CUDA GPU and none is in use: drop --fp16 to train in float32 on the CPU")
    if bf16 and not cuda and not use_cpu:
        raise ValueError("--bf16 was requested but no CUDA GPU is available: drop --bf16 to train in float32 on "
                         "the CPU (or add --use_cpu for bfloat16 autocast on the CPU)")
    if bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--bf16 needs an Ampere or newer GPU; {torch.cuda.get_device_name(0)} has no bfloat16 "
                         "support: use --fp16 instead")


def check_training_args(training_args, model_args: ModelArguments, data_args: DataArguments) -> None:
    """One-line ValueErrors for the TrainingArguments values this module relies on, and the --output_dir rule.

    --output_dir follows the output rule (lib.core.outputs): not a file, a protected place or an input (the model
    as resolved, the data, the cache; the resume checkpoint may lie inside it), and not a directory with
    content this toolkit did not write or another kind of its outputs (unless --overwrite_output_dir); an
    earlier fine-tune's directory is fine (the Trainer resumes or rewrites its own files there).
    """
    for flag in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(training_args, flag) <= 0:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(training_args, flag)}")
    check_finite_fields(training_args)  # --learning_rate nan passes every comparison
    if training_args.learning_rate < 0:
        raise ValueError(f"--learning_rate must be >= 0, got {training_args.learning_rate}")
    if training_args.max_steps <= 0 and training_args.num_train_epochs <= 0:
        raise ValueError(f"--num_train_epochs must be positive (or --max_steps > 0), got {training_args.num_train_epochs}")
    if Path(training_args.output_dir).is_file():
        raise ValueError(f"--output_dir {training_args.output_dir} is a file; name a directory")
    check_outputs([finetune_output(training_args, model_args)], finetune_inputs(model_args, data_args, training_args),
                  model_args.overwrite_output_dir)


def finetune_output(training_args, model_args: ModelArguments) -> Output:
    """--output_dir as an output of kind "finetune": at least the size of the model it saves."""
    return Output("--output_dir", training_args.output_dir, "finetune", force="--overwrite_output_dir",
                  size=saved_size_estimate(model_args.model_name_or_path), may_contain=("--resume_from_checkpoint",))


def finetune_inputs(model_args: ModelArguments, data_args: DataArguments, training_args) -> dict:
    """What a fine-tune reads (lib.models.loading.run_inputs): the model as resolved, the data, the cache, the resume checkpoint."""
    resume = training_args.resume_from_checkpoint
    extra = {"--resume_from_checkpoint": Path(resume)} if resume and resume not in RESUME_LATEST else {}
    return run_inputs(model_args.model_name_or_path, "--model_name_or_path", data_args.data_dir, extra)


def parse_args(task: str, argv: Sequence[str] | None = None):
    """(model_args, data_args, training_args) from the command line; bad values exit with a one-line error."""
    from transformers import TrainingArguments

    from lib.core.arguments import OneLineHfArgumentParser

    if task not in finetune_tasks():
        raise ValueError(f"task {task!r} is not one of {', '.join(finetune_tasks())}")
    parser = OneLineHfArgumentParser((ModelArguments, LMDataArguments if task == LM_TASK else TaskDataArguments,
                               TrainingArguments))
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        values = json.loads(Path(argv[0]).read_text())
    else:
        values = vars(parser.parse_args(argv))
    try:
        check_precision(bool(values.get("bf16")), bool(values.get("fp16")), bool(values.get("use_cpu")))
        if not torch.cuda.is_available():
            values["use_cpu"] = True  # without it the Trainer runs each torchrun process alone on a CPU machine
        model_args, data_args, training_args = parser.parse_dict(values)
        check_finite_fields(model_args)
        check_training_args(training_args, model_args, data_args)
        return model_args, data_args, training_args
    except ValueError as err:  # one line, without argparse's usage block (hundreds of Trainer flags)
        parser.error(str(err))

