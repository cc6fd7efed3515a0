#!/usr/bin/env python
"""Evaluate a causal LM on the registered tasks (WikiText2/C4 perplexity, SQuAD v2, GSM8K, BoolQ, the zero-shot
multiple-choice suite); write one JSON report.

    python scripts/eval_tasks.py --model out/exp1/finetuned \
        --tasks wikitext2 squad gsm8k boolq --data_dir DATA \
        --limit 200 --output out/exp1/eval.json

--limit, --nll_limit and --max_new_tokens take one number for every task or per-task values:
`--limit squad=200 gsm8k=50 boolq=500`. With no --model it evaluates the embedded
default (SmolLM2-135M-Instruct).

Every metric `m` comes with `m_stderr` (standard error of the mean over examples, ddof = 1),
perplexity also with its 95% interval (`ppl_ci95_low`, `ppl_ci95_high`), and the report keeps
`per_example: {task: {metric: {example id or window index: value}}}` so that two reports over
the same examples can be compared with a paired bootstrap (scripts/summarize_experiments.py), and
`tasks_info: {task: {display, output_type, metrics: {metric: {display, higher_is_better, format, role}}}}`
so that a reader needs no task registry.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/eval_tasks.py`: make `lib` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.core.cli import OneLineParser, check_range, run_or_fail, seed_everything, setup_logging
from lib.core.errors import ModelLoadError, OutputError
from lib.core.outputs import Output, claim_outputs
from lib.core.results import environment_info
from lib.core.writes import write_output_json
from lib.eval.batching import DEFAULT_BATCH_TOKENS
from lib.eval.lm_eval_backend import BackendError, lm_eval_tasks, require_lm_eval
from lib.eval.runner import (by_lm_eval, check_nll_limit, check_tasks, evaluate_tasks, example_tasks, load_task_data,
                             nll_tasks, perplexity_tasks)
from lib.eval.tasks.task import get, group_names, members, names
from lib.models.checks import check_seqlen, effective_seqlen, given_seqlen
from lib.models.loading import (DEFAULT_MODEL, add_kernel_flag, check_kernel, check_model_early, load_model, model_label,
                                run_inputs)
from lib.tiered.checkpoint import DTYPES, add_verify_flag

logger = logging.getLogger("eval_tasks")
DEFAULT_SEQLEN = 2048


def build_parser() -> argparse.ArgumentParser:
    tasks = [get(name) for name in names()]
    fewshot = "/".join(task.display for task in tasks if task.fewshot is not None)
    lengths = ", ".join(f"{task.name} {task.max_new_tokens}" for task in tasks if task.max_new_tokens is not None)
    groups = "; ".join(f"{name} = {' '.join(task.name for task in members(name))}" for name in group_names())
    p = OneLineParser(description=__doc__)
    p.add_argument("--model", default=DEFAULT_MODEL, help="Hub id, local model dir, .gguf file, or the alias smollm2-135m (default)")
    p.add_argument("--tasks", nargs="+", default=["wikitext2", "squad", "gsm8k", "boolq"], metavar="TASK",
                   help=f"any of the tasks {', '.join(names())}, or a group ({groups}) "
                        "(default: wikitext2 squad gsm8k boolq)")
    p.add_argument("--data_dir", default=None, help="local data root laid out like the official releases (default: env WANDA_DATA_DIR, else the Hub)")
    p.add_argument("--limit", nargs="+", default=None, metavar="N|TASK=N",
                   help="evaluate the first N examples of each example task, or per task: squad=200 gsm8k=50")
    p.add_argument("--nll_limit", nargs="+", default=None, metavar="N|TASK=N",
                   help=f"{'/'.join(nll_tasks())}: the answer NLL (one forward pass per example) on the first N "
                        "examples instead of --limit's, e.g. squad=500 gsm8k=300")
    p.add_argument("--batch_size", type=int, default=8, help="prompts per generation batch (and lm-eval's batch size)")
    p.add_argument("--batch_tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                   help="padded tokens per log-likelihood forward: multiple choice and answer NLL, length-sorted "
                        f"(default {DEFAULT_BATCH_TOKENS})")
    p.add_argument("--seqlen", type=int, default=None,
                   help=f"perplexity window length (default {DEFAULT_SEQLEN}, capped at the model's "
                        "max_position_embeddings; a larger explicit value is an error)")
    p.add_argument("--eval_windows", type=int, default=None, help="perplexity over the first N windows only (default: all)")
    p.add_argument("--num_fewshot", type=int, default=0, help=f"{fewshot}: prefix the first K solved train examples")
    p.add_argument("--max_new_tokens", nargs="+", default=None, metavar="N|TASK=N",
                   help=f"override generation length (defaults: {lengths}); for smoke tests only")
    p.add_argument("--log_samples", action="store_true", help="store per-example predictions in the report")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=("auto", *DTYPES), help="auto = float32 on CPU, the checkpoint's dtype on GPU")
    add_verify_flag(p)
    add_kernel_flag(p)
    p.add_argument("--seed", type=int, default=0, help="torch / numpy / random seed (generation is greedy)")
    p.add_argument("--backend", choices=("ours", "lm-eval"), default="ours",
                   help=f"ours (offline, default) or lm-eval for {', '.join(lm_eval_tasks())} (needs `pip install lm-eval` "
                        "and its datasets; perplexity and groups always ours)")
    p.add_argument("--output", default=None, help="report path (default: out/eval/<model>.json)")
    p.add_argument("--overwrite", action="store_true",
                   help="let --output replace a file this toolkit did not write (default: refuse)")
    return p


def parse_per_task(values: list[str] | None, flag: str) -> int | dict[str, int] | None:
    """`["200"]` -> 200; `["squad=200", "gsm8k=50"]` -> {"squad": 200, "gsm8k": 50}; None -> None."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return _positive_int(values[0], flag)
    per_task = {}
    for item in values:
        task, sep, number = item.partition("=")
        if not sep or task not in example_tasks():
            raise ValueError(f"{flag} {item!r}: use one number, or TASK=N with TASK in {', '.join(example_tasks())}")
        per_task[task] = _positive_int(number, f"{flag} {task}")
    return per_task


def _positive_int(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{flag} expects a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{flag} must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> Path:
    explicit_seqlen = given_seqlen(args, DEFAULT_SEQLEN)
    check_tasks(args.tasks)
    check_kernel(args.kernel, args.model, args.device)
    limit = parse_per_task(args.limit, "--limit")
    max_new_tokens = parse_per_task(args.max_new_tokens, "--max_new_tokens")
    nll_limit = parse_per_task(args.nll_limit, "--nll_limit")
    check_nll_limit(nll_limit)
    for flag in ("batch_size", "batch_tokens", "eval_windows"):
        check_range(f"--{flag}", getattr(args, flag), 1)
    check_range("--num_fewshot", args.num_fewshot, 0)
    if any(by_lm_eval(task, args.backend) for task in args.tasks):
        require_lm_eval()
    if set(args.tasks) & set(perplexity_tasks()):
        check_seqlen(args.seqlen)
    output = Path(args.output) if args.output else Path("out") / "eval" / f"{model_label(args.model)}.json"
    with claim_outputs([Output("--output", output, "eval_report", is_file=True)],
                       run_inputs(args.model, data_dir=args.data_dir), overwrite=args.overwrite):
        perplexity = bool(set(args.tasks) & set(perplexity_tasks()))
        check_model_early(args.model, args.seqlen if perplexity else None, explicit_seqlen)  # the config, no weights
        data = load_task_data(args.tasks, args.data_dir, limit, args.num_fewshot, nll_limit, args.backend)
        return evaluate_and_write(args, output, limit, max_new_tokens, nll_limit, data, explicit_seqlen)


def evaluate_and_write(args: argparse.Namespace, output: Path, limit, max_new_tokens, nll_limit, data=None,
                       explicit_seqlen: bool = True) -> Path:
    """Load the model, evaluate every task on `data` (`lib.eval.runner.load_task_data`; None: read here) and
    write the report to `output` (claimed by `run`)."""
    seed_everything(args.seed)
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device, verify_checksums=args.verify_checksums,
                                  kernel=args.kernel)
    seconds = {"load_model": time.perf_counter() - start}
    perplexity = bool(set(args.tasks) & set(perplexity_tasks()))
    seqlen = effective_seqlen(model, args.seqlen, explicit_seqlen) if perplexity else None
    logger.info("evaluating %s on %s", args.model, ", ".join(args.tasks))

    result = evaluate_tasks(
        model, tokenizer, args.tasks, data_dir=args.data_dir, limit=limit, batch_size=args.batch_size,
        seqlen=seqlen or args.seqlen, eval_windows=args.eval_windows, num_fewshot=args.num_fewshot,
        max_new_tokens=max_new_tokens, log_samples=args.log_samples, backend=args.backend, nll_limit=nll_limit,
        data=data, batch_tokens=args.batch_tokens,
    )
    seconds.update(result["seconds"])
    seconds["total"] = time.perf_counter() - start
    report = {
        "model": args.model,
        "backend": args.backend,
        "tasks": list(args.tasks),
        "metrics": result["metrics"],
        "counts": result["counts"],
        "seconds": seconds,
        "settings": {
            "data_dir": args.data_dir,
            "limit": limit,
            "nll_limit": nll_limit,
            "batch_size": args.batch_size,
            "batch_tokens": args.batch_tokens,
            "seqlen": seqlen,
            "seqlen_requested": args.seqlen,
            "eval_windows": args.eval_windows,
            "num_fewshot": args.num_fewshot,
            "max_new_tokens": max_new_tokens,
            "device": str(next(model.parameters()).device),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "seed": args.seed,
            "kernel": args.kernel,
        },
        "environment": environment_info(),
    }
    report["tasks_info"] = result["tasks_info"]
    report["per_example"] = result["per_example"]
    if args.log_samples:
        report["samples"] = result.get("samples", {})
    write_output_json(output, report, "eval_report", args.overwrite)
    logger.info("wrote %s (%.0f s)", output, seconds["total"])
    return output


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    return run_or_fail(run, args, errors=(ValueError, ModelLoadError, FileNotFoundError, BackendError, OutputError))


if __name__ == "__main__":
    sys.exit(main())
