"""Sparsity-preserving fine-tuning with the Hugging Face Trainer (SQuAD, GSM8K, WikiText2/C4).

The entry points in `dense_ft/` are one line each: `main("squad")`, `main("gsm8k")`, `main("lm")`.
The pieces live apart: arguments in lib.training.args, features and the collator in
lib.training.data, the mask and its Trainer callback in lib.training.sparsity (usable with any
Trainer subclass), checkpoint resumption in lib.training.checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

from torch import nn

from lib.core.cli import fail, interrupts_end_in_one_line, setup_logging as setup_cli_logging
from lib.core.errors import OutputError, WeightFileError
from lib.core.files import atomic_write, record_written, write_faults
from lib.core.markers import add_to_manifest
from lib.core.outputs import Output, claim_outputs
from lib.core.results import environment_info, write_json
from lib.core.writes import in_place_dir, staged_entries
from lib.models.arch import measure_sparsity
from lib.models.loading import load_model, load_tokenizer, resolve_model_path
from lib.tiered.tier_map import TIER_MAP_FILE
from lib.training.args import DataArguments, ModelArguments, finetune_inputs, finetune_output, parse_args
from lib.training.checkpoints import ResumeError, resolve_resume
from lib.training.data import PadCollator, load_datasets
from lib.training.sparsity import SparsityCallback, SparsityMask, rank_fingerprints, tier_map_modules

logger = logging.getLogger(__name__)

SPARSITY_FILE = "sparsity.json"
RESULTS_FILE = "finetune_results.json"
TRAINER_FILES = ("train_results.json", "eval_results.json", "all_results.json", "trainer_state.json")


def record_mask(model: nn.Module, model_args: ModelArguments, tier_modules: list[str], start: dict) -> SparsityMask | None:
    """The mask to enforce (None for a dense model or --no_preserve_sparsity), with one log line saying which;
    tier_modules: the module paths of the model's tier map (`lib.training.sparsity.tier_map_modules`)."""
    if not model_args.preserve_sparsity:
        if start["sparsity"] >= model_args.min_layer_sparsity:
            logger.warning("--no_preserve_sparsity: plain fine-tuning will densify this pruned model (sparsity %.4f)",
                           start["sparsity"])
        return None
    tier_weights = [f"{module}.weight" for module in tier_modules]
    unknown = sorted(set(tier_weights) - set(start["modules"]))
    if unknown:
        logger.warning("the tier map lists %d modules that are not decoder Linear layers, e.g. %s",
                       len(unknown), unknown[0])
    mask = SparsityMask.from_model(model, model_args.min_layer_sparsity, required=tier_weights)
    if not mask.keep:
        logger.info("dense model: no decoder Linear has >= %.2g zeros (overall %.4f%%): training all weights "
                    "normally", model_args.min_layer_sparsity, 100 * start["sparsity"])
        return None
    logger.info("preserving the zero pattern of %d of %d decoder Linear weights (%d zeros, sparsity %.4f%s): "
                "gradients masked, weights re-masked after every optimizer step",
                len(mask.keep), len(start["modules"]), mask.n_pruned, start["sparsity"],
                f"; tier map with {len(tier_weights)} modules" if tier_weights else "")
    return mask


def sparsity_report(start: dict, end: dict, mask: SparsityMask | None, unchanged: bool | None,
                    ranks: list[dict]) -> dict[str, Any]:
    """What sparsity.json holds: totals and per-weight sparsity at start and end, and the rank fingerprints."""
    return {
        "preserved": mask is not None,
        "n_masked_weights": 0 if mask is None else len(mask.keep),
        "zero_pattern_unchanged": unchanged,
        "start": {k: start[k] for k in ("zeros", "total", "sparsity")},
        "end": {k: end[k] for k in ("zeros", "total", "sparsity")},
        "ranks": ranks,
        "ranks_identical": len({(r["weights_sha256"], r["zero_pattern_sha256"]) for r in ranks}) == 1 if ranks else None,
        "modules": {name: {"start": s, "end": end["modules"][name]} for name, s in start["modules"].items()},
    }


def setup_logging(training_args) -> None:
    import transformers

    setup_cli_logging(logging.WARNING, stream=sys.stdout)
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logging.getLogger("lib").setLevel(log_level if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def main(task: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Fine-tune for `task` ("squad", "gsm8k" or "lm") from command-line arguments; return the results dict.

    Before any loading: --output_dir is checked (see `check_training_args`), locked against a second
    run writing it and marked as this toolkit's when it is new, empty or an earlier fine-tune's
    (`lib.core.writes.in_place_dir`), and --resume_from_checkpoint is resolved to a complete checkpoint.
    A write fault (full disk, file-size limit) is one line; so is Ctrl-C / SIGTERM, after which a
    directory this run created and left holding only the marker is removed again.
    """
    model_args, data_args, training_args = parse_args(task, argv)
    setup_logging(training_args)
    with interrupts_end_in_one_line():
        try:
            with claimed_output_dir(model_args, data_args, training_args):
                training_args.resume_from_checkpoint = resolve_resume(training_args.resume_from_checkpoint,
                                                                      training_args.output_dir)
                with write_faults("--output_dir", Path(training_args.output_dir).absolute(),
                                  after="the fine-tuned model was not saved"):
                    return train(task, model_args, data_args, training_args)
        except (OutputError, ResumeError) as err:
            fail(err)


@contextlib.contextmanager
def claimed_output_dir(model_args: ModelArguments, data_args: DataArguments, training_args) -> Iterator[None]:
    """On the main process: --output_dir claimed (lib.core.outputs.claim_outputs) and marked (in_place_dir) for the block."""
    if training_args.process_index != 0:
        yield
        return
    output = finetune_output(training_args, model_args)
    with claim_outputs([output], finetune_inputs(model_args, data_args, training_args), model_args.overwrite_output_dir):
        with in_place_dir(output):
            yield


def train(task: str, model_args: ModelArguments, data_args: DataArguments, training_args) -> dict[str, Any]:
    """Load the model and data, fine-tune with the sparsity mask, save the model and the reports."""
    from transformers import set_seed

    set_seed(training_args.seed)
    started = time.perf_counter()

    # the main process of each node first converts a GGUF model and writes token caches; the others read them
    with training_args.main_process_first(desc="model and data loading"):
        try:  # the data first: a bad file fails before the model's weights load
            tokenizer = load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path)
            train_set, eval_set = load_datasets(task, data_args, tokenizer, training_args.seed)
            model, _ = load_model(model_args.model_name_or_path, dtype="float32", device=str(training_args.device),
                                  verify_checksums=model_args.verify_checksums)
        except (ValueError, OSError) as err:  # ModelLoadError, DataError (malformed or missing data files)
            fail(err)
    source_dir = Path(resolve_model_path(model_args.model_name_or_path))
    logger.info("%s: %d training and %d evaluation examples", task, len(train_set), len(eval_set))
    if not eval_set and training_args.eval_strategy != "no":
        fail(f"--eval_strategy {training_args.eval_strategy} needs evaluation data; drop --max_eval_samples 0")

    start = measure_sparsity(model)
    try:  # the tier map and its TierMetadata checked before training (the file is copied unchanged at the end)
        tier_modules = tier_map_modules(source_dir)
    except WeightFileError as err:  # a damaged tier_map.safetensors
        fail(err)
    mask = record_mask(model, model_args, tier_modules, start)
    training_args.prediction_loss_only = True  # eval_loss only; never gather [N, T, vocab] logits
    trainer = _trainer_class()(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set or None,
        data_collator=PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[SparsityCallback(mask)] if mask is not None else None,
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    model = trainer.model
    end = measure_sparsity(model)
    ranks = rank_fingerprints(model, mask)
    if mask is None:
        unchanged = None
    elif ranks:  # DDP: the exact zero pattern on every rank
        unchanged = all(r["zero_pattern_unchanged"] for r in ranks)
    else:
        unchanged = mask.unchanged(model)
    train_metrics = dict(train_result.metrics, train_samples=len(train_set), sparsity_start=start["sparsity"],
                         sparsity_end=end["sparsity"])
    if unchanged is not None:
        train_metrics["zero_pattern_unchanged"] = unchanged
        if not unchanged:
            logger.error("the zero pattern changed during training")

    model.config.use_cache = True
    saved = save_final_model(trainer, finetune_output(training_args, model_args))
    trainer.log_metrics("train", train_metrics)
    trainer.save_metrics("train", train_metrics)
    trainer.save_state()

    eval_metrics = {}
    if eval_set:
        eval_metrics = trainer.evaluate()
        eval_metrics["eval_samples"] = len(eval_set)
        eval_metrics["perplexity"] = math.exp(min(eval_metrics["eval_loss"], 700.0))
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    eval_loss_start = next((log["eval_loss"] for log in trainer.state.log_history
                            if log.get("step") == 0 and "eval_loss" in log), None)

    sparsity = sparsity_report(start, end, mask, unchanged, ranks)
    results = {
        "task": task,
        "model_name_or_path": model_args.model_name_or_path,
        "output_dir": training_args.output_dir,
        "model_args": asdict(model_args),
        "data_args": asdict(data_args),
        "train": train_metrics,
        "eval": eval_metrics,
        "eval_loss_start": eval_loss_start,
        "sparsity": {k: v for k, v in sparsity.items() if k != "modules"},
        "wall_seconds": time.perf_counter() - started,
        "world_size": training_args.world_size,
        "environment": environment_info(),
    }
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        if (source_dir / TIER_MAP_FILE).is_file():  # checked before training (tier_map_modules); copied byte for byte
            atomic_write(output_dir / TIER_MAP_FILE, lambda tmp: shutil.copy2(source_dir / TIER_MAP_FILE, tmp))
        write_json(output_dir / SPARSITY_FILE, sparsity)
        write_json(output_dir / RESULTS_FILE, results)
        add_to_manifest(output_dir, "finetune", saved + [TIER_MAP_FILE, SPARSITY_FILE, RESULTS_FILE, *TRAINER_FILES])
        record_written(f"--output_dir {output_dir} (the fine-tuned model)")
        logger.info("saved the fine-tuned model, %s and %s to %s", SPARSITY_FILE, RESULTS_FILE, output_dir)
    return results


def save_final_model(trainer, output: Output) -> list[str]:
    """`trainer.save_model()` through a temporary sibling of --output_dir whose entries are moved in when the
    save is complete (lib.core.writes.staged_entries): a failed or killed save leaves no half-written
    model.safetensors, and the next run removes the temporary. FSDP / DeepSpeed save in place (every rank
    takes part). Returns the names of the entries saved (on the main process)."""
    if not trainer.args.should_save or trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        trainer.save_model()
        return []
    with staged_entries(output, "the fine-tuned model was not saved") as tmp:
        trainer.save_model(str(tmp))
        saved = sorted(os.listdir(tmp))
    return saved


def _trainer_class():
    """The Trainer, with a checkpoint that fails or is interrupted while written removed again (and each
    finished one noted for the one line an interrupted run ends with)."""
    from transformers import Trainer
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class CheckpointCleaningTrainer(Trainer):
        def _save_checkpoint(self, model, trial):
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            existed = folder.exists()
            try:
                super()._save_checkpoint(model, trial)
            except BaseException:
                if not existed and self.args.should_save:
                    shutil.rmtree(folder, ignore_errors=True)
                raise
            if self.args.should_save:
                record_written(f"--output_dir checkpoint {folder} (resume with --resume_from_checkpoint latest)")

    return CheckpointCleaningTrainer
