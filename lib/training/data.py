"""Fine-tuning features: prompt + target encoding, causal-LM windows, and the padding collator.

A feature is {"input_ids": [L], "labels": [L]} (lists of token ids); labels are IGNORE_INDEX on
prompt and padding positions. The prompt templates come from lib.data.prompts, the examples from lib.data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from lib.data import registry
from lib.data.calibration import get_loaders
from lib.data.sources import load_task_examples

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the loss skips (prompt and padding positions)
LM_DEFAULT_TRAIN_WINDOWS = 1000
LM_TASK = "lm"  # causal-LM fine-tuning on a text dataset



def encode_prompt_target(tokenizer, prompt: str, target: str, max_length: int) -> dict[str, list[int]] | None:
    """Token ids of prompt + target + EOS with labels -100 on the prompt, cut to max_length.

    Prompt and target are tokenized separately so that the boundary is exact and
    matches generation (prompt ids, then the model continues). Returns
    {"input_ids": [L], "labels": [L]}, or None when no target token fits.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; pass --tokenizer_name with one that does")
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + target_ids)[:max_length]
    if len(input_ids) <= len(prompt_ids):
        return None
    labels = [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids):]
    return {"input_ids": input_ids, "labels": labels}


def build_task_dataset(task: str, examples: Sequence[dict], tokenizer, max_length: int) -> list[dict]:
    """Tokenized training features ({"input_ids", "labels"}) of example dicts, with the prompt and target of `task`'s spec."""
    spec = registry.get(task, "examples")
    if not spec.finetunable:
        raise ValueError(f"{task} has no fine-tuning prompt and target in lib.data.registry")
    features, n_dropped = [], 0
    for example in examples:
        feature = encode_prompt_target(tokenizer, spec.prompt(example), spec.target(example), max_length)
        if feature is None:
            n_dropped += 1
        else:
            features.append(feature)
    if n_dropped:
        logger.warning("%s: dropped %d of %d examples whose prompt fills --max_length %d (no answer token left)",
                       task, n_dropped, len(examples), max_length)
    if not features:
        raise ValueError(f"{task}: no example fits --max_length {max_length}; raise --max_length")
    return features


def build_lm_dataset(windows: torch.Tensor) -> list[dict]:
    """Causal-LM features from token windows [N, T]: labels are the inputs (the model shifts them)."""
    return [{"input_ids": row.tolist(), "labels": row.tolist()} for row in windows]


def load_datasets(task: str, data_args, tokenizer, seed: int) -> tuple[list[dict], list[dict]]:
    """(train features, eval features) for `task`; eval is empty when --max_eval_samples is 0.

    `data_args` is a lib.training.args DataArguments (data_dir, max_*_samples, max_length / dataset_name, block_size).
    """
    if task == LM_TASK:
        n_train = data_args.max_train_samples or LM_DEFAULT_TRAIN_WINDOWS
        trainloader, testenc = get_loaders(
            data_args.dataset_name, nsamples=n_train, seed=seed, seqlen=data_args.block_size,
            tokenizer=tokenizer, data_dir=data_args.data_dir,
        )
        train_windows = torch.cat([inp for inp, _ in trainloader], dim=0)  # (N, T)
        test_ids = testenc.input_ids
        n_windows = test_ids.shape[1] // data_args.block_size
        if data_args.max_eval_samples is not None:
            if data_args.max_eval_samples > n_windows:
                logger.warning("--max_eval_samples %d exceeds the %d test windows of --block_size %d; using %d",
                               data_args.max_eval_samples, n_windows, data_args.block_size, n_windows)
            n_windows = min(n_windows, data_args.max_eval_samples)
        eval_windows = test_ids[0, : n_windows * data_args.block_size].view(n_windows, data_args.block_size)
        return build_lm_dataset(train_windows), build_lm_dataset(eval_windows)
    train_examples = load_task_examples(task, "train", data_dir=data_args.data_dir,
                                             limit=data_args.max_train_samples, flag="--max_train_samples")
    train = build_task_dataset(task, train_examples, tokenizer, data_args.max_length)
    if data_args.max_eval_samples == 0:
        return train, []
    eval_examples = load_task_examples(task, "eval", data_dir=data_args.data_dir,
                                            limit=data_args.max_eval_samples, flag="--max_eval_samples")
    return train, build_task_dataset(task, eval_examples, tokenizer, data_args.max_length)


@dataclass
class PadCollator:
    """Dynamic padding: pad each batch to its longest feature (right side); labels pad with -100.

    Features are {"input_ids": [L], "labels": [L]}; returns LongTensors [B, T_max] for
    input_ids, attention_mask and labels. The attention mask comes from the lengths,
    so a pad id equal to EOS never hides a trained EOS label.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {
            "input_ids": torch.full((len(features), longest), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(features), longest), dtype=torch.long),
            "labels": torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long),
        }
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            batch["input_ids"][row, :length] = torch.tensor(feature["input_ids"])
            batch["attention_mask"][row, :length] = 1
            batch["labels"][row, :length] = torch.tensor(feature["labels"])
        return batch

