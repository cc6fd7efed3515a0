"""Sparsity-preserving fine-tuning with the Hugging Face Trainer (SQuAD, GSM8K, WikiText2/C4).

A plain `Trainer` run destroys a pruned model: every pruned weight gets a
gradient and is nonzero after the first optimizer step. Here the zero pattern
of every Linear weight in the decoder layers is recorded before training as a
`SparsityMask` (bool `keep` [O, I] per weight, True = kept; O = out_features,
I = in_features) and enforced twice per step:

1. gradient masking: a tensor hook on each masked weight zeroes the pruned
   entries of its gradient as autograd produces it, before the gradient is
   accumulated into `.grad` and therefore before DDP's all-reduce sees it;
2. weight re-masking: `SparsityCallback.on_optimizer_step` multiplies the
   weights by `keep` after every optimizer step, so weight decay, mixed
   precision, optimizer state or a sharded optimizer cannot leave a pruned
   weight nonzero.

The entry points in `dense_ft/` are one line each: `main("squad")`,
`main("gsm8k")`, `main("lm")`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Sequence

import torch
from torch import nn

from lib.models import (
    DEFAULT_MODEL,
    decoder_linear_weights,
    load_model,
    load_tokenizer,
    measure_sparsity,
    resolve_model_path,
)
from lib.outputs import Output, OutputError, check_outputs, claim_outputs, write_marker
from lib.prompts import gsm8k_prompt, gsm8k_target, squad_prompt, squad_target
from lib.results import environment_info, write_json
from lib.tier_io import TIER_MAP_FILE, load_tier_maps

try:  # the Trainer is optional for the tensor-level helpers, required by main()
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    TrainerCallback = object

logger = logging.getLogger(__name__)

TASKS = ("squad", "gsm8k", "lm")
LM_DATASETS = ("wikitext2", "c4")
IGNORE_INDEX = -100  # label value the loss skips (prompt and padding positions)
SPARSITY_FILE = "sparsity.json"
RESULTS_FILE = "finetune_results.json"


# ----------------------------------------------------------------------------- arguments


@dataclass
class ModelArguments:
    """Which model to fine-tune and how its sparsity is kept."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Pruned model directory, Hub id, .gguf file or the alias "
                  f"{DEFAULT_MODEL!r} (anything lib.models.load_model accepts)."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer to use if not the one saved with the model."}
    )
    preserve_sparsity: bool = field(
        default=True,
        metadata={"help": "Keep the zero pattern of the decoder Linear weights (gradient masking + re-masking "
                  "after every optimizer step). --no_preserve_sparsity is plain Trainer fine-tuning, which "
                  "densifies a pruned model."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Write into an --output_dir that holds files this toolkit did not write (default: refuse; "
                  "nothing is deleted either way)."},
    )
    min_layer_sparsity: float = field(
        default=0.01,
        metadata={"help": "A decoder Linear counts as pruned (its zeros are kept) when at least this fraction of "
                  "its weights is zero, or when the model's tier map lists it. Below it, zeros are incidental "
                  "(e.g. from GGUF dequantization) and train normally."},
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_layer_sparsity < 1.0:
            raise ValueError(f"--min_layer_sparsity must be in [0, 1), got {self.min_layer_sparsity}")


@dataclass
class DataArguments:
    """Data options shared by every task."""

    data_dir: str | None = field(
        default=None,
        metadata={"help": "Directory with the official file layouts (squad/dev-v2.0.json, gsm8k/test.jsonl, "
                  "wikitext2/wiki.test.raw, ...), e.g. ../shared/data; default: lib.data's default."},
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Use only the first N training examples (lm: the number of random --block_size "
                  "training windows, default 1000)."},
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Evaluate on the first N examples of the evaluation split (SQuAD dev, GSM8K test; "
                  "lm: the first N test windows). 0 disables evaluation."},
    )

    def __post_init__(self) -> None:
        if self.max_train_samples is not None and self.max_train_samples <= 0:
            raise ValueError(f"--max_train_samples must be positive, got {self.max_train_samples}")
        if self.max_eval_samples is not None and self.max_eval_samples < 0:
            raise ValueError(f"--max_eval_samples must be >= 0 (0 = no evaluation), got {self.max_eval_samples}")


@dataclass
class TaskDataArguments(DataArguments):
    """Prompt + answer tasks (SQuAD, GSM8K)."""

    max_length: int = field(
        default=512,
        metadata={"help": "Longest prompt + answer in tokens; longer examples are cut on the right and dropped "
                  "when no answer token is left."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length <= 1:
            raise ValueError(f"--max_length must be at least 2 tokens, got {self.max_length}")


@dataclass
class LMDataArguments(DataArguments):
    """Causal-LM fine-tuning on raw text."""

    dataset_name: str = field(
        default="wikitext2", metadata={"help": "Text corpus to fine-tune on.", "choices": list(LM_DATASETS)}
    )
    block_size: int = field(default=512, metadata={"help": "Tokens per training / evaluation window."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dataset_name not in LM_DATASETS:
            raise ValueError(f"--dataset_name {self.dataset_name!r} is not one of {', '.join(LM_DATASETS)}")
        if self.block_size <= 1:
            raise ValueError(f"--block_size must be at least 2 tokens, got {self.block_size}")


DATA_ARGUMENTS = {"squad": TaskDataArguments, "gsm8k": TaskDataArguments, "lm": LMDataArguments}
LM_DEFAULT_TRAIN_WINDOWS = 1000


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


def check_training_args(training_args, model_args: ModelArguments) -> None:
    """One-line ValueErrors for the TrainingArguments values this module relies on, and the --output_dir rule.

    --output_dir must not be a file, the input model (or inside / around it), or a directory with
    content this toolkit did not write (unless --overwrite_output_dir); an earlier fine-tune's
    directory is fine (the Trainer resumes or rewrites its own files there).
    """
    for flag in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if getattr(training_args, flag) <= 0:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(training_args, flag)}")
    if training_args.learning_rate < 0:
        raise ValueError(f"--learning_rate must be >= 0, got {training_args.learning_rate}")
    if training_args.max_steps <= 0 and training_args.num_train_epochs <= 0:
        raise ValueError(f"--num_train_epochs must be positive (or --max_steps > 0), got {training_args.num_train_epochs}")
    if Path(training_args.output_dir).is_file():
        raise ValueError(f"--output_dir {training_args.output_dir} is a file; name a directory")
    check_outputs([finetune_output(training_args)], {"--model_name_or_path": model_args.model_name_or_path},
                  model_args.overwrite_output_dir)


def finetune_output(training_args) -> Output:
    return Output("--output_dir", training_args.output_dir, "finetune",
                  force="pass --overwrite_output_dir to write into it anyway (nothing is deleted)")


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_STATE = "trainer_state.json"
CHECKPOINT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
CHECKPOINT_ZIPS = ("optimizer.pt", "scheduler.pt")  # torch.save zip archives the Trainer needs to resume exactly
RESUME_LATEST = ("latest", "true", "True")


def checkpoint_problem(path: Path) -> str | None:
    """Why the Trainer checkpoint directory `path` cannot be resumed from, or None when it is complete.

    Checks what a kill during `_save_checkpoint` leaves broken, cheaply: trainer_state.json parses,
    the weights file is non-empty with a readable safetensors header, optimizer.pt and
    scheduler.pt are complete zip archives (torch.save's format; a truncated one has no end record).
    """
    import zipfile

    if not path.is_dir():
        return "is not a directory"
    try:
        json.loads((path / CHECKPOINT_STATE).read_text())
    except (OSError, ValueError) as err:
        return f"has no readable {CHECKPOINT_STATE} ({err.__class__.__name__})"
    weights = next((path / name for name in CHECKPOINT_WEIGHTS if (path / name).is_file()), None)
    if weights is None or weights.stat().st_size == 0:
        return f"has no model weights ({' / '.join(CHECKPOINT_WEIGHTS)}) or an empty one"
    if weights.name == "model.safetensors":
        from safetensors import safe_open

        try:
            with safe_open(weights, "pt") as f:
                f.keys()
        except Exception as err:  # safetensors raises its own error types for a truncated header
            return f"has an unreadable {weights.name} ({err.__class__.__name__})"
    for name in CHECKPOINT_ZIPS:
        if not (path / name).is_file() or not zipfile.is_zipfile(path / name):
            return f"has a missing, empty or truncated {name}"
    return None


def latest_complete_checkpoint(output_dir: Path) -> Path | None:
    """The highest-step complete `checkpoint-N` under `output_dir`; broken ones above it are logged and skipped."""
    steps = sorted((int(p.name.split("-")[1]), p) for p in output_dir.glob("checkpoint-*")
                   if p.name.split("-")[1].isdigit())
    for _, path in reversed(steps):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("skipping the incomplete checkpoint %s: it %s", path, problem)
    return None


class ResumeError(ValueError):
    """--resume_from_checkpoint names a checkpoint that cannot be resumed from."""


def resolve_resume(value: str | None, output_dir: str) -> str | None:
    """--resume_from_checkpoint: a checkpoint path (must be complete), or `latest` (the latest complete one
    under --output_dir; none: start from scratch). Raises ValueError naming a broken explicit checkpoint."""
    if value is None:
        return None
    if value in RESUME_LATEST:
        latest = latest_complete_checkpoint(Path(output_dir))
        if latest is None:
            logger.info("no complete checkpoint under %s: training from the start", output_dir)
            return None
        logger.info("resuming from %s, the latest complete checkpoint", latest)
        return str(latest)
    problem = checkpoint_problem(Path(value))
    if problem:
        raise ResumeError(f"--resume_from_checkpoint {value} {problem}: pass a complete checkpoint, or "
                         "`latest` for the latest complete one under --output_dir")
    return value


# ----------------------------------------------------------------------------- datasets


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


def prompt_and_target(task: str, example: dict) -> tuple[str, str]:
    """The shared prompt template and training target for one example of `task`."""
    if task == "squad":
        return squad_prompt(example["context"], example["question"]), squad_target(example["answers"])
    if task == "gsm8k":
        return gsm8k_prompt(example["question"]), gsm8k_target(example["answer"])
    raise ValueError(f"task {task!r} has no prompt template; prompt tasks: squad, gsm8k")


def build_task_dataset(task: str, examples: Sequence[dict], tokenizer, max_length: int) -> list[dict]:
    """Tokenized training features ({"input_ids", "labels"}) for SQuAD / GSM8K example dicts."""
    features, n_dropped = [], 0
    for example in examples:
        feature = encode_prompt_target(tokenizer, *prompt_and_target(task, example), max_length)
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


def load_datasets(task: str, data_args: DataArguments, tokenizer, seed: int) -> tuple[list[dict], list[dict]]:
    """(train features, eval features) for `task`; eval is empty when --max_eval_samples is 0."""
    from lib import data

    if task == "lm":
        n_train = data_args.max_train_samples or LM_DEFAULT_TRAIN_WINDOWS
        trainloader, testenc = data.get_loaders(
            data_args.dataset_name, nsamples=n_train, seed=seed, seqlen=data_args.block_size,
            tokenizer=tokenizer, data_dir=data_args.data_dir,
        )
        train_windows = torch.cat([inp for inp, _ in trainloader], dim=0)  # (N, T)
        test_ids = testenc.input_ids
        n_windows = test_ids.shape[1] // data_args.block_size
        if data_args.max_eval_samples is not None:
            n_windows = min(n_windows, data_args.max_eval_samples)
        eval_windows = test_ids[0, : n_windows * data_args.block_size].view(n_windows, data_args.block_size)
        return build_lm_dataset(train_windows), build_lm_dataset(eval_windows)
    train_examples = data.load_task_examples(task, "train", data_dir=data_args.data_dir,
                                             limit=data_args.max_train_samples)
    train = build_task_dataset(task, train_examples, tokenizer, data_args.max_length)
    if data_args.max_eval_samples == 0:
        return train, []
    eval_examples = data.load_task_examples(task, "eval", data_dir=data_args.data_dir,
                                            limit=data_args.max_eval_samples)
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


# ----------------------------------------------------------------------------- sparsity mask


class SparsityMask:
    """The zero pattern to preserve: {parameter name: bool keep [O, I]}, True = kept.

    Lifecycle: `from_model` (record) -> `register_gradient_hooks` -> `apply` after
    every optimizer step -> `unchanged` (check) -> `remove_hooks`.
    """

    def __init__(self, keep: dict[str, torch.Tensor]):
        self.keep = keep
        self._handles: list = []

    @classmethod
    def from_model(cls, model: nn.Module, min_layer_sparsity: float = 0.01,
                   required: Sequence[str] = ()) -> "SparsityMask":
        """Record the zeros of every decoder Linear weight with sparsity >= min_layer_sparsity or listed in `required`.

        `required` holds parameter names ("model.layers.0.mlp.up_proj.weight") that are masked whatever
        their sparsity (the modules of a tier map).
        """
        keep = {}
        for name, weight in decoder_linear_weights(model).items():
            layer_keep = weight.detach() != 0
            sparsity = 1.0 - layer_keep.float().mean().item()
            if name in required or (sparsity > 0 and sparsity >= min_layer_sparsity):
                keep[name] = layer_keep
        return cls(keep)

    @property
    def n_pruned(self) -> int:
        return sum(int((~k).sum()) for k in self.keep.values())

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        missing = sorted(set(self.keep) - set(params))
        if missing:
            raise ValueError(f"the model has no parameters {missing[:3]}...: the mask was recorded on another model")
        return {name: params[name] for name in self.keep}

    def register_gradient_hooks(self, model: nn.Module) -> None:
        """Zero the pruned entries of each masked weight's gradient as autograd produces it.

        A hook on a leaf tensor runs before the gradient is accumulated into `.grad`,
        so DDP (whose reducer hooks run after accumulation) all-reduces masked gradients.
        """
        self.remove_hooks()
        for name, param in self._params(model).items():
            keep = self.keep[name]
            self._handles.append(param.register_hook(lambda grad, keep=keep: grad.where(keep.to(grad.device), 0.0)))

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Set every pruned weight to exactly zero, in place."""
        for name, param in self._params(model).items():
            param.masked_fill_(~self.keep[name].to(param.device), 0)

    @torch.no_grad()
    def unchanged(self, model: nn.Module) -> bool:
        """True when each masked weight's set of zeros is exactly the recorded one (no new zeros, none lost)."""
        return all(torch.equal(param != 0, self.keep[name].to(param.device))
                   for name, param in self._params(model).items())


class SparsityCallback(TrainerCallback):
    """Enforces a `SparsityMask` during `Trainer.train`: gradient hooks for the run, re-masking after each step."""

    def __init__(self, mask: SparsityMask):
        self.mask = mask

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # after a --resume_from_checkpoint load, before the first forward
        self.mask.register_gradient_hooks(model)
        self.mask.apply(model)

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.mask.apply(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.mask.remove_hooks()


def tier_map_modules(model_dir: Path) -> list[str]:
    """Module paths listed in the model directory's tier map, [] when it has none."""
    path = model_dir / TIER_MAP_FILE
    if not path.is_file():
        return []
    maps, _ = load_tier_maps(path)
    return sorted(maps)


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and raw bytes of tensors, in key order (exact equality check)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rank_fingerprints(model: nn.Module, mask: SparsityMask | None) -> list[dict[str, Any]]:
    """Per process {"rank", "weights_sha256", "zero_pattern_sha256", "zero_pattern_unchanged"}, gathered.

    Exact hashes of all parameters and of the decoder Linear zero pattern, so a DDP run can show that
    every rank ends with the same model. Every rank must call this; [] without torch.distributed.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return []
    fingerprint = {
        "rank": dist.get_rank(),
        "weights_sha256": tensors_sha256(dict(model.named_parameters())),
        "zero_pattern_sha256": tensors_sha256({n: w == 0 for n, w in decoder_linear_weights(model).items()}),
        "zero_pattern_unchanged": None if mask is None else mask.unchanged(model),
    }
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, fingerprint)
    return gathered


# ----------------------------------------------------------------------------- entry point


def record_mask(model: nn.Module, model_args: ModelArguments, source_dir: Path, start: dict) -> SparsityMask | None:
    """The mask to enforce (None for a dense model or --no_preserve_sparsity), with one log line saying which."""
    if not model_args.preserve_sparsity:
        if start["sparsity"] >= model_args.min_layer_sparsity:
            logger.warning("--no_preserve_sparsity: plain fine-tuning will densify this pruned model (sparsity %.4f)",
                           start["sparsity"])
        return None
    tier_weights = [f"{module}.weight" for module in (tier_map_modules(source_dir) if source_dir.is_dir() else [])]
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


def parse_args(task: str, argv: Sequence[str] | None = None):
    """(model_args, data_args, training_args) from the command line; bad values exit with a one-line error."""
    from transformers import HfArgumentParser, TrainingArguments

    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    parser = HfArgumentParser((ModelArguments, DATA_ARGUMENTS[task], TrainingArguments))
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
        check_training_args(training_args, model_args)
        return model_args, data_args, training_args
    except ValueError as err:  # one line, without argparse's usage block (hundreds of Trainer flags)
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(err).split())}\n")


def setup_logging(training_args) -> None:
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    logging.getLogger("lib").setLevel(log_level if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def fail(message: Any) -> NoReturn:
    """Exit with status 2 and a one-line error on stderr, like the other CLIs."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(2)


def main(task: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Fine-tune for `task` ("squad", "gsm8k" or "lm") from command-line arguments; return the results dict.

    Before any loading: --output_dir is checked (see `check_training_args`), locked against a second
    run writing it and marked as this toolkit's, and --resume_from_checkpoint is resolved to a
    complete checkpoint.
    """
    model_args, data_args, training_args = parse_args(task, argv)
    setup_logging(training_args)
    main_process = training_args.process_index == 0
    claim = contextlib.nullcontext()
    if main_process:
        claim = claim_outputs([finetune_output(training_args)], {"--model_name_or_path": model_args.model_name_or_path},
                              model_args.overwrite_output_dir)
    try:
        training_args.resume_from_checkpoint = resolve_resume(training_args.resume_from_checkpoint,
                                                              training_args.output_dir)
        with claim:
            if main_process:
                Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
                write_marker(training_args.output_dir, "finetune")
            return train(task, model_args, data_args, training_args)
    except (OutputError, ResumeError) as err:
        fail(err)


def train(task: str, model_args: ModelArguments, data_args: DataArguments, training_args) -> dict[str, Any]:
    """Load the model and data, fine-tune with the sparsity mask, save the model and the reports."""
    from transformers import Trainer, set_seed

    set_seed(training_args.seed)
    started = time.perf_counter()

    # the main process of each node first converts a GGUF model and writes token caches; the others read them
    with training_args.main_process_first(desc="model and data loading"):
        try:
            model, tokenizer = load_model(model_args.model_name_or_path, dtype="float32",
                                          device=str(training_args.device))
            if model_args.tokenizer_name:
                tokenizer = load_tokenizer(model_args.tokenizer_name)
            train_set, eval_set = load_datasets(task, data_args, tokenizer, training_args.seed)
        except (ValueError, OSError) as err:  # ModelLoadError, DataError (malformed or missing data files)
            fail(err)
    source_dir = Path(resolve_model_path(model_args.model_name_or_path))
    logger.info("%s: %d training and %d evaluation examples", task, len(train_set), len(eval_set))
    if not eval_set and training_args.eval_strategy != "no":
        fail(f"--eval_strategy {training_args.eval_strategy} needs evaluation data; drop --max_eval_samples 0")

    start = measure_sparsity(model)
    mask = record_mask(model, model_args, source_dir, start)
    training_args.prediction_loss_only = True  # eval_loss only; never gather [N, T, vocab] logits
    trainer = Trainer(
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
    trainer.save_model()  # save_pretrained (safetensors) + tokenizer, on the main process only
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
        if (source_dir / TIER_MAP_FILE).is_file():
            shutil.copy2(source_dir / TIER_MAP_FILE, output_dir / TIER_MAP_FILE)
        write_json(output_dir / SPARSITY_FILE, sparsity)
        write_json(output_dir / RESULTS_FILE, results)
        logger.info("saved the fine-tuned model, %s and %s to %s", SPARSITY_FILE, RESULTS_FILE, output_dir)
    return results
